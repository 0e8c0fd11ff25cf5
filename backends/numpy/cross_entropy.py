"""Cross entropy of class indices on NumPy arrays: one pass over the input.

The log-softmax is never materialised. Per row (or, for a K-dimensional input,
per (sample, position)), the pass finds the maximum, then, with the row in cache,
the sum of the shifted exponentials, the target's shifted logit and the smoothing
sum: one read of the input from memory. The per-row log-sum-exp of the shifted
logits follows; this is the blocked ("online") normaliser of Milakov &
Gimelshein, *Online normalizer calculation for softmax* (2018), with the whole
row in cache instead of a running maximum. The gradient, when asked for, is
written by the same pass from the cached exponentials: softmax minus the
smoothed one-hot, scaled by the weights and the reduction's denominator.

Where numba is installed, one compiled kernel does each row whole
(:mod:`.compiled.cross_entropy`: float32 and float64, float16 converted to
float32 by chunks, C-contiguous rows, rows that lie apart (``a[:, :C]`` of a
wider ``a``) and K-dimensional inputs by blocks of positions, parallel over rows
on :func:`anyloss.get_threads` threads). Without numba, for other layouts, and
for the rows holding nan or a non-finite maximum, the NumPy engine: blocks of
rows small enough to stay in cache, a handful of NumPy calls writing into
preallocated arrays, on a thread pool. Targets of class probabilities take compiled
rows of their own (K-dimensional input: columns, by blocks of positions;
:func:`cross_entropy_probabilities`; without numba, the written-once formula). The
Dask backend maps :func:`cross_entropy_elements`, :func:`cross_entropy_targets`,
:func:`blocked_cross_entropy_and_grad` and :func:`probability_losses` over its chunks.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import array_api_compat.numpy as npx
import numpy as np

from anyloss._class_index import masks
from anyloss._threads import get_threads
from anyloss.backends.numpy import compiled
from anyloss.backends.numpy.float16 import float16_call
from anyloss.backends.numpy.results import reduced_result

__all__ = [
    "cross_entropy",
    "cross_entropy_plain",
    "cross_entropy_and_grad",
    "cross_entropy_and_grad_plain",
    "blocked_cross_entropy_and_grad",
    "cross_entropy_elements",
    "cross_entropy_targets",
    "cross_entropy_rows",
    "cross_entropy_probabilities",
    "probability_losses",
    "row_normalisers",
    "smoothed_class_losses",
]

#: Elements of the compute dtype in one worker's block (256 KiB of float32).
_CE_BLOCK_ELEMENTS = 1 << 16
#: Inputs smaller than this (elements) run on the calling thread.
_CE_PARALLEL_ELEMENTS = 1 << 20
#: Inputs smaller than this (elements) decline to the generic formula, whose dozen NumPy
#: calls cost less than setting up the pass (the measurement is in benchmarks/README.md).
_CE_MIN_ELEMENTS = 1 << 15
#: float16 input reaches the compiled kernels converted to float32 by chunks of samples
#: of about this many elements.
_CE_HALF_CHUNK_ELEMENTS = 1 << 20
#: Elements of one column block of the compiled K-dimensional kernels (positions per
#: block: this over C, at least 16).
_CE_COLUMN_ELEMENTS = 1 << 16
#: Plain calls whose work is below this run the compiled row pass serially on the calling
#: thread (a parallel launch costs 5 to 10 microseconds). The work counts each row as its
#: classes plus :data:`_CE_ROW_ELEMENTS`, its fixed cost in elements (about 40 ns a row
#: against 0.3 ns a value, float32 in cache). Measured serial / parallel: 64 x 100 6.8 /
#: 9.3 us, 256 x 100 25.9 / 18.8, 256 x 32 13.0 / 14.5, 1024 x 10 45.0 / 24.8, 32 x 1000
#: 10.4 / 11.4, 64 x 1000 20.5 / 17.1 (2-core AMD EPYC).
_CE_SERIAL_WORK = 1 << 15
_CE_ROW_ELEMENTS = 64
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
#: Per dtype, the ``ones(1)`` the row kernels read without a weight (made once: on small
#: problems each array call is a visible part of the whole call).
_NO_WEIGHT = {d: np.ones(1, dtype=d) for d in _FLOATS}
_CE_POOL: list = []
_CE_POOL_LOCK = threading.Lock()
_CE_SCRATCH = threading.local()


def _ce_workers() -> int:
    """Threads of one pass: the thread setting (:func:`anyloss._threads.get_threads`)."""
    return max(1, get_threads())


def _ce_pool() -> ThreadPoolExecutor:
    with _CE_POOL_LOCK:
        if not _CE_POOL:
            _CE_POOL.append(ThreadPoolExecutor(max(2, min(os.cpu_count() or 1, 64)),
                                               thread_name_prefix="anyloss-ce"))
        return _CE_POOL[0]


def _ce_scratch(size: int, dtype) -> np.ndarray:
    """The calling thread's scratch buffer of at least ``size`` elements of ``dtype``."""
    buf = getattr(_CE_SCRATCH, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = np.empty(max(size, _CE_BLOCK_ELEMENTS), dtype=dtype)
        _CE_SCRATCH.buf = buf
    return buf


class _CrossEntropyPass:
    """One pass of cross entropy over a class-index problem.

    ``x3`` is the input as ``(N, C, D)`` (class axis 1; ``D == 1`` for the common
    ``(N, C)`` case), ``target`` ``(N, D)``. :meth:`run` fills, per target element,
    the shift (the row maximum; a lower value of the row for the compiled kernels' rows of
    256 classes or more), the sum of the shifted exponentials and, with label
    smoothing, the weighted sum of the shifted logits (float64); :meth:`losses`
    turns them into the unreduced losses. After :meth:`with_gradient`, the same
    pass also writes the gradient ``(N, C, D)`` in the input's dtype.

    Two engines. Where numba is installed and ``x3`` is C-contiguous (or ``D == 1`` with
    the rows apart, :func:`_rows_apart`; or float16, converted by chunks), one compiled
    kernel per row (or per block of positions of a sample, for ``D > 1``) does the
    whole row: :mod:`.compiled.cross_entropy`, parallel over rows on
    :func:`anyloss.get_threads` threads; rows holding a nan or a non-finite
    maximum are redone by the NumPy engine, whose arithmetic follows torch there.
    Otherwise, the NumPy engine: blocks of rows that stay in cache, a handful of
    NumPy calls each writing into preallocated arrays (NumPy releases the GIL in
    its loops, so a thread pool over blocks uses every core).
    """

    def __init__(self, x3, target, weight, ignore_index, label_smoothing):
        self.x3 = x3
        n, c, d = x3.shape
        self.n_classes = c
        # The compute dtype: float32 for float16 input, else the input's own.
        self.cdt = np.dtype(np.float32 if x3.dtype == np.float16 else x3.dtype)
        self.eps = float(label_smoothing)
        t = np.asarray(target).reshape(n, d)
        self.usable, self.invalid, self.t, self.w_y = cross_entropy_targets(
            t, weight, c, ignore_index)
        if weight is None:
            self.w = None
            self.w_total = float(c)
        else:
            self.w = np.asarray(weight).reshape(c).astype(self.cdt)
            self.w_total = float(np.sum(self.w, dtype=np.float64))
        self.peak = np.empty((n, d), dtype=self.cdt)
        self.total = np.empty((n, d), dtype=np.float64)
        self.smooth = np.empty((n, d), dtype=np.float64) if self.eps > 0 else None
        # The shift is the row maximum unclamped, as torch's: a row with a +inf logit
        # (x - inf is nan there) or of -inf only gives nan losses and gradients.
        self.grad = None
        self.picked = None  # the targets' logits, kept before an in-place gradient
        self.compiled = (compiled.HAVE_NUMBA and c > 0 and x3.size > 0
                         and (x3.flags.c_contiguous or x3.dtype == np.float16
                              or (d == 1 and _rows_apart(x3[:, :, 0]))))
        if self.compiled:
            self.smoothing = self.eps != 0
            if self.smooth is None:
                self.smooth = np.empty((n, d), dtype=np.float64)  # written, not used
            self.kernel_weight = _kernel_weight(self.w, self.smoothing, c, self.cdt)
            self.kernels = compiled.load("cross_entropy")

    def with_gradient(self, scale: float, out: np.ndarray | None = None) -> None:
        """Also write the gradient of ``scale * sum(losses)`` during :meth:`run`, into
        ``out`` (of the input's shape and dtype) when given. ``out`` may be the input
        itself, for ``(N, C)`` input in float32 or float64: each row is then overwritten
        by its gradient once the row's sums are taken (the targets' logits are kept
        first, for :meth:`losses`)."""
        # coef: d(result)/d(loss element); 0 for ignored elements, nan for invalid ones.
        coef = np.where(self.usable, scale, 0.0)
        self.coef = np.where(self.invalid, np.nan, coef)
        factor = (1.0 - self.eps) * self.w_y + (self.eps / self.n_classes) * self.w_total
        self.softmax_factor = (self.coef * factor).astype(self.cdt)
        self.hit = (self.coef * (1.0 - self.eps) * self.w_y).astype(self.cdt)
        self.a = np.empty_like(self.softmax_factor)  # softmax_factor / total, per block
        self.spread = None
        if self.eps > 0:
            self.spread = (self.coef * (self.eps / self.n_classes)).astype(self.cdt)
        elif self.compiled:
            self.spread = np.zeros_like(self.softmax_factor)  # read, multiplies nothing
        if out is None:
            out = np.empty(self.x3.shape, dtype=self.x3.dtype)
        self.grad = out.reshape(self.x3.shape)
        if out.size and not np.shares_memory(self.grad, out):  # the gradient would be lost
            raise ValueError("out must be viewable as the input's (N, C, D) layout; a "
                             "Fortran-order (N, C) input takes no out")
        if np.shares_memory(self.grad, self.x3):
            same = (self.grad.ctypes.data == self.x3.ctypes.data
                     and self.grad.strides == self.x3.strides)
            if not (same and self.x3.shape[2] == 1 and self.x3.dtype == self.cdt):
                raise ValueError("out overlaps the input without being the (N, C) input "
                                 "itself in float32 or float64")
            self.picked = self._target_logits()
        if self.compiled and not self.grad.flags.c_contiguous:
            self.compiled = False

    def blocks(self):
        n, c, d = self.x3.shape
        if d == 1:
            rows = max(1, _CE_BLOCK_ELEMENTS // max(c, 1))
            return [(i, min(i + rows, n), 0, 1) for i in range(0, n, rows)]
        if c * d <= _CE_BLOCK_ELEMENTS:
            rows = max(1, _CE_BLOCK_ELEMENTS // (c * d))
            return [(i, min(i + rows, n), 0, d) for i in range(0, n, rows)]
        cols = max(1, _CE_BLOCK_ELEMENTS // max(c, 1))
        return [(i, i + 1, j, min(j + cols, d)) for i in range(n) for j in range(0, d, cols)]

    def run(self):
        if self.compiled:
            self._run_compiled()
            return
        blocks = self.blocks()
        do = self._columns if self.x3.shape[2] != 1 else self._rows
        workers = _ce_workers()
        if self.x3.size < _CE_PARALLEL_ELEMENTS or len(blocks) < 2 or workers == 1:
            self._do(do, blocks)
        else:
            tasks = min(len(blocks), workers)
            bounds = np.linspace(0, len(blocks), tasks + 1).astype(int)
            pool = _ce_pool()
            futures = [pool.submit(self._do, do, blocks[bounds[k]:bounds[k + 1]])
                       for k in range(tasks)]
            for future in futures:
                future.result()
        if self.grad is not None:
            self._subtract_targets()

    def _do(self, do, blocks):
        with np.errstate(invalid="ignore", over="ignore"):
            for block in blocks:
                do(*block)

    def _run_compiled(self):
        """The compiled engine over all samples (float16: by chunks converted to float32),
        then the NumPy engine on the rows (positions) flagged bad."""
        n, c, d = self.x3.shape
        bad = np.empty((n, d), dtype=np.uint8)
        if self.x3.dtype == self.cdt:
            self._kernel(0, n, self.x3, self.grad, bad)
        else:
            # float16, by chunks through two float32 buffers, converted by the compiled
            # loops (NumPy's casts cost 25x the pass, :mod:`.compiled.half`).
            half = compiled.load("half")
            step = max(1, _CE_HALF_CHUNK_ELEMENTS // (c * d))
            x = np.empty(min(step, n) * c * d, self.cdt)
            g = None if self.grad is None else np.empty_like(x)
            for n0 in range(0, n, step):
                n1 = min(n0 + step, n)
                shape = (n1 - n0, c, d)
                xc = half.to_float32(self.x3[n0:n1], out=x[:math.prod(shape)].reshape(shape))
                gc = None if g is None else g[:xc.size].reshape(shape)
                self._kernel(n0, n1, xc, gc, bad)
                if gc is not None:
                    half.to_float16(gc, out=self.grad[n0:n1])
        if not bad.any():
            return
        with np.errstate(invalid="ignore", over="ignore"):
            for i, j in np.argwhere(bad):
                (self._rows if d == 1 else self._columns)(i, i + 1, j, j + 1)
        if self.grad is not None:
            self._subtract_targets(bad.astype(bool))

    def _kernel(self, n0, n1, x, g, bad):
        """The compiled kernel on samples ``n0:n1``, whose input is ``x`` ``(n1 - n0, C, D)``
        (C-contiguous, or ``D == 1`` with the rows apart; the compute dtype) and gradient
        ``g`` (C-contiguous, or ``None``)."""
        k, w, smoothing = self.kernels, self.kernel_weight, self.smoothing
        nb, c, d = x.shape
        peak, total, smooth = self.peak[n0:n1], self.total[n0:n1], self.smooth[n0:n1]
        if d == 1:
            x2, flat, blocks = x[:, :, 0], (lambda a: a.reshape(nb)), k.row_blocks(nb)
            contiguous = x2.flags.c_contiguous
            if g is None:
                forward = k.forward_rows if contiguous else k.forward_strided_rows
                forward(blocks, x2, w, smoothing, flat(peak), flat(total), flat(smooth),
                        flat(bad[n0:n1]))
            else:
                gradient = k.gradient_rows if contiguous else k.gradient_strided_rows
                gradient(blocks, x2, flat(self.t[n0:n1]), w, smoothing,
                         flat(self.softmax_factor[n0:n1]), flat(self.spread[n0:n1]),
                         flat(self.hit[n0:n1]), flat(peak), flat(total), flat(smooth),
                         flat(bad[n0:n1]), flat(self.a[n0:n1]),
                         None if self.in_place else g.reshape(nb, c))
            return
        width = min(d, max(16, _CE_COLUMN_ELEMENTS // c))
        if g is None:
            k.forward_columns(x, w, smoothing, width, peak, total, smooth, bad[n0:n1])
        else:
            k.gradient_columns(x, self.t[n0:n1], w, smoothing, width, self.softmax_factor[n0:n1],
                               self.spread[n0:n1], self.hit[n0:n1], peak, total, smooth,
                               bad[n0:n1], g)

    def _rows(self, n0, n1, _d0, _d1):
        """Block of whole rows, class axis last: ``x[n0:n1, :, 0]``."""
        c, nb = self.n_classes, n1 - n0
        v = self.x3[n0:n1, :, 0]
        buf = _ce_scratch(nb * c, self.cdt)[: nb * c].reshape(nb, c)
        peak, total = self.peak[n0:n1, 0], self.total[n0:n1, 0]
        np.max(v, axis=1, out=peak)
        np.subtract(v, peak[:, None], out=buf)
        if self.smooth is not None:
            smooth = self.smooth[n0:n1, 0]
            if self.w is None:
                np.sum(buf, axis=1, out=smooth)
            else:
                np.matmul(buf, self.w, out=smooth)
        np.exp(buf, out=buf)
        np.sum(buf, axis=1, out=total)
        if self.grad is None:
            return
        a = self.a[n0:n1, 0]
        np.divide(self.softmax_factor[n0:n1, 0], total, out=a)
        out = self.grad[n0:n1, :, 0]
        work = out if out.dtype == self.cdt else buf
        np.multiply(buf, a[:, None], out=work)
        if self.spread is not None:
            spread = self.spread[n0:n1, 0, None]
            if self.w is None:
                np.subtract(work, spread, out=work)
            else:
                work -= spread * self.w
        if work is buf:
            np.copyto(out, buf, casting="unsafe")

    def _columns(self, n0, n1, d0, d1):
        """Block ``x[n0:n1, :, d0:d1]``, class axis in the middle (K-dimensional input)."""
        c, nb, dl = self.n_classes, n1 - n0, d1 - d0
        v = self.x3[n0:n1, :, d0:d1]
        buf = _ce_scratch(nb * c * dl, self.cdt)[: nb * c * dl].reshape(nb, c, dl)
        peak, total = self.peak[n0:n1, d0:d1], self.total[n0:n1, d0:d1]
        np.max(v, axis=1, out=peak)
        np.subtract(v, peak[:, None, :], out=buf)
        if self.smooth is not None:
            smooth = self.smooth[n0:n1, d0:d1]
            if self.w is None:
                np.sum(buf, axis=1, out=smooth)
            else:
                np.matmul(self.w, buf, out=smooth)
        np.exp(buf, out=buf)
        np.sum(buf, axis=1, out=total)
        if self.grad is None:
            return
        a = self.a[n0:n1, d0:d1]
        np.divide(self.softmax_factor[n0:n1, d0:d1], total, out=a)
        np.multiply(buf, a[:, None, :], out=buf)
        if self.spread is not None:
            spread = self.spread[n0:n1, None, d0:d1]
            buf -= spread if self.w is None else spread * self.w[None, :, None]
        np.copyto(self.grad[n0:n1, :, d0:d1], buf, casting="unsafe")

    def _subtract_targets(self, where=None):
        """The one-hot part of the gradient: ``coef * (1 - eps) * w[y]`` off each target's
        logit (only where the ``(N, D)`` mask ``where`` is true, when given)."""
        n, c, d = self.x3.shape
        flat = np.arange(n)[:, None] * (c * d) + self.t * d + np.arange(d)[None, :]
        hit = self.hit
        if where is not None:
            flat, hit = flat[where], hit[where]
        flat = flat.ravel()
        grad = self.grad.reshape(-1)
        grad[flat] = (grad[flat].astype(self.cdt) - hit.ravel())

    @property
    def in_place(self) -> bool:
        """Whether the gradient is written over the input (:meth:`with_gradient`)."""
        return self.picked is not None

    def _target_logits(self):
        """The targets' logits ``(N, D)`` (class 0's where not usable), in the input's dtype."""
        return np.take_along_axis(self.x3, self.t[:, None, :], axis=1)[:, 0, :]

    def losses(self):
        """Unreduced losses ``(N, D)`` in float64: 0 where ignored, nan where invalid."""
        shifted = self.picked if self.in_place else self._target_logits()
        with np.errstate(divide="ignore", invalid="ignore"):
            # in float64: exact for float32, whose kernels' shift is not the maximum
            picked = np.subtract(shifted, self.peak, dtype=np.float64)
            log_total = np.log(self.total.astype(np.float64))
            spread = self.w_total * log_total - self.smooth if self.eps > 0 else None
        return smoothed_class_losses(log_total - picked, spread, self.w_y, self.eps,
                                     self.n_classes, self.usable, self.invalid)


def smoothed_class_losses(nll, spread, w_y, eps, n_classes, usable, invalid):
    """The losses of class-index cross entropy from a row's ``nll = lse - z_y`` and, for
    label smoothing ``eps > 0``, ``spread = sum_c w_c (lse - z_c)`` (float64 arrays of one
    shape; ``spread`` unused without smoothing): ``(1 - eps) w_y nll + eps / C spread``,
    0 where the target is not ``usable`` (ignored) and nan where it is ``invalid``."""
    with np.errstate(invalid="ignore"):
        loss = w_y * nll
        if eps > 0:
            loss = (1.0 - eps) * loss + (eps / n_classes) * spread
    loss = np.where(usable, loss, 0.0)
    return np.where(invalid, np.nan, loss)


def row_normalisers(x):
    """``(peak, total)`` of each row of ``x`` ``(N, C)`` (float32 or float64, C-contiguous):
    a shift and ``sum_c exp(x_c - peak)``, both float64 ``(N,)``, by the pass's engine
    (non-finite rows as torch has them), so that ``peak + log(total)`` is the row's
    logsumexp. The shift is the row maximum, or a value of the row below it (the compiled
    pass's rows of 256 classes or more: :mod:`.compiled.cross_entropy`); ``total`` is at
    least 1. The linear cross entropy's class tiles combine them over the classes."""
    p = _CrossEntropyPass(x[:, :, None], np.zeros((x.shape[0], 1), dtype=np.intp), None,
                          -100, 0.0)
    p.run()
    return p.peak[:, 0].astype(np.float64), p.total[:, 0]


def cross_entropy_targets(target, weight, n_classes, ignore_index):
    """Per target element: ``usable``, ``invalid`` (neither ignored nor in ``[0, C)``), the
    index to read (0 where not usable) and the 'mean' weight ``w[y]`` (0 where not usable).

    The masks are anyloss's own (:func:`anyloss._class_index.masks`)."""
    t = np.asarray(target)
    ignored, in_range = masks(npx, t, n_classes, ignore_index)
    usable = in_range & ~ignored
    invalid = ~ignored & ~in_range
    safe = np.where(usable, t, 0).astype(np.intp)
    if weight is None:
        w_y = usable.astype(np.float64)
    else:
        w_y = np.where(usable, np.asarray(weight, dtype=np.float64).reshape(-1)[safe], 0.0)
    return usable, invalid, safe, w_y


def _ce_problem(input, target):
    """``input`` as ``(N, C, D)`` (a view when its layout allows) and ``target`` as ``(N, D)``.

    A 2-d ``(N, C)`` input laid out in Fortran order (a transposed C array), which would
    take the NumPy engine, is taken as ``(1, C, N)`` instead: its transpose, C-contiguous,
    its samples the positions of the compiled column kernels, without a copy. At 2048 x
    4096 float32 the forward went from 55.7 to 12.6 ms (torch 39.4 ms), forward + gradient
    from 62.8 to 30.5 ms (torch 108 ms), 2026-12-06 (``np.ascontiguousarray`` of that input
    alone takes about 60 ms here). The losses keep the samples' order; the gradient is then
    ``grad[0].T`` (:func:`_ce_gradient`)."""
    if input.ndim == 1:
        return input.reshape(1, input.shape[0], 1), np.asarray(target).reshape(1, 1)
    if _fortran_rows(input):
        return input.T.reshape(1, input.shape[1], input.shape[0]), np.asarray(target).reshape(
            1, input.shape[0])
    n, c = input.shape[:2]
    d = math.prod(input.shape[2:])
    return input.reshape(n, c, d), np.asarray(target).reshape(n, d)


def _fortran_rows(input) -> bool:
    """Whether :func:`_ce_problem` takes the 2-d ``input`` by its transpose."""
    return input.ndim == 2 and input.flags.f_contiguous and not input.flags.c_contiguous


def _ce_gradient(grad, input):
    """The gradient ``grad`` (the shape :func:`_ce_problem` gave ``input``) in ``input``'s
    shape: a view (Fortran-ordered, as the input, where the input was)."""
    return grad[0].T if _fortran_rows(input) else grad.reshape(input.shape)


def _rows_apart(x) -> bool:
    """Whether the row kernels take the 2-d ``x`` other than as a C-contiguous array: its
    columns adjacent, its rows apart (``a[:, :C]`` of a wider ``a``, rows reversed, ...),
    float32 or float64 (:func:`.compiled.cross_entropy.forward_strided_rows`). Sliced
    from 4096 x 32768 float32 to 4096 x 32000, the forward took 99.5 ms by the NumPy
    engine, against 18.2 ms for the same values C-contiguous (2026-12-06)."""
    return (x.dtype in _FLOATS and x.ndim == 2
            and (x.strides[1] == x.itemsize or x.shape[1] == 1))  # one column: any stride


def _ce_declines(input, target) -> bool:
    return (not np.issubdtype(np.asarray(target).dtype, np.integer)
            or input.dtype not in (np.float16, np.float32, np.float64)
            or input.shape[0 if input.ndim == 1 else 1] == 0)


def _ce_denominator(p: _CrossEntropyPass) -> float:
    """The 'mean' denominator: the summed weights of the targets that are not ignored."""
    return float(np.sum(p.w_y, dtype=np.float64))


def cross_entropy_elements(input, target, weight, *, ignore_index, label_smoothing):
    """Unreduced losses (target's shape, float64) and their 'mean' weights (same shape).

    The building block of :func:`cross_entropy` and of the Dask fast path; an index
    outside ``[0, C)`` that is not ``ignore_index`` gives nan (no error: eager callers
    have checked the values already).
    """
    x3, t2 = _ce_problem(input, target)
    p = _CrossEntropyPass(x3, t2, weight, ignore_index, label_smoothing)
    p.run()
    shape = np.shape(target)
    return p.losses().reshape(shape), p.w_y.reshape(shape)


def cross_entropy_rows(input, target, weight, *, ignore_index, label_smoothing,
                       gradient_scale, out):
    """One pass over an ``(N, C)`` block: its losses (float64 ``(N,)``), and the gradient of
    ``gradient_scale * sum(losses)`` wrt ``input`` written into ``out`` (``(N, C)``, the
    input's dtype; ``input`` itself to overwrite the logits with their gradient). The
    building block of the linear cross entropy's row blocks."""
    x3, t2 = _ce_problem(input, target)
    p = _CrossEntropyPass(x3, t2, weight, ignore_index, label_smoothing)
    p.with_gradient(gradient_scale, out)
    p.run()
    return p.losses()[:, 0]


def _probability_targets(target) -> bool:
    """Whether a checked call's ``target`` holds class probabilities (a floating array)."""
    return np.issubdtype(np.asarray(target).dtype, np.floating)


def cross_entropy_probabilities(input, target, weight, *, reduction, label_smoothing,
                                gradient):
    """``cross_entropy`` of class probabilities (``target`` of ``input``'s shape) by the
    compiled rows of :func:`.compiled.cross_entropy.probability_rows` (or, K-dimensional,
    its columns, :func:`.compiled.cross_entropy.probability_columns`), and with
    ``gradient`` its gradient wrt ``input`` (of the losses' sum for ``'none'``): the loss,
    or ``(loss, grad)``; ``NotImplemented`` where :func:`probability_losses` declines, so
    that the written-once formula answers.

    The operands are :func:`anyloss.classification.cross_entropy`'s, checked: a weight is
    ``(C,)``, and ``ignore_index`` has no effect. ``'mean'`` divides by the number of
    losses, ``N d1 ... dK`` (1 for a 1-d input), as torch does for probabilities (not by
    the weights). At 2048 x 32000 float32, against the formula's NumPy calls, which needed
    twice the input's size beside it: forward 157.2 -> 32.0 ms, forward + gradient 576.0 ->
    51.2 ms (torch 218-249 and 476-477 ms; ``benchmarks/bench_cross_entropy.py
    --probability-shapes 2048x32000``, 2026-12-06).

    float16 operands (input, target and weight all float16 NumPy arrays) are computed in
    float32, converted by the compiled loops of :mod:`.compiled.half`, and the loss and
    gradient rounded once to float16 (:func:`_probabilities_in_float32`)."""
    if input.dtype == np.float16:
        return _probabilities_in_float32(input, target, weight, reduction=reduction,
                                         label_smoothing=label_smoothing, gradient=gradient)
    shape = _probability_loss_shape(input)
    count = math.prod(shape)
    scale = (1.0 / count if reduction == "mean" else 1.0) if gradient else None
    result = probability_losses(input, target, weight, label_smoothing=label_smoothing,
                                gradient_scale=scale)
    if result is NotImplemented:
        return NotImplemented
    losses, grad = result
    if reduction == "none":
        loss = losses.reshape(shape).astype(input.dtype)
    else:
        loss = reduced_result(float(np.sum(losses)), count, reduction, input.dtype)
    return (loss, grad) if gradient else loss


def _probabilities_in_float32(input, target, weight, *, reduction, label_smoothing,
                              gradient):
    """:func:`cross_entropy_probabilities` of float16 operands: the float32 result on their
    values, rounded once to float16, by :func:`.float16.float16_call` (as the elementwise
    losses take float16, and the class-index pass its float16 input); ``NotImplemented``
    without numba or for operands that are not all float16 NumPy arrays. NumPy's float16
    arithmetic, which the formula would run, converts each operation's operands one
    element at a time: at 2048 x 4096 the forward took 146.8 ms against torch's 13.4 ms
    (2026-12-06)."""
    return float16_call(cross_entropy_probabilities, input, target, weight,
                        reduction=reduction, label_smoothing=label_smoothing,
                        gradient=gradient)


def _probability_loss_shape(input) -> tuple[int, ...]:
    """The shape of the losses of ``input`` ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``:
    ``()``, ``(N,)`` or ``(N, d1, ..., dK)``."""
    return () if input.ndim == 1 else (input.shape[0], *input.shape[2:])


def probability_losses(input, target, weight, *, label_smoothing, gradient_scale=None):
    """``(losses, grad)``: the losses of class probabilities (float64; ``(N,)`` for a 2-d
    input, ``(1,)`` for a 1-d one, ``(N, d1 ... dK)`` flattened to ``(N, D)`` for a
    K-dimensional one) and, for a ``gradient_scale``, the gradient of ``gradient_scale *
    sum(losses)`` wrt ``input`` (its shape and dtype; else ``None``), by
    :func:`.compiled.cross_entropy.probability_rows` (``(N, C, 1, ..., 1)`` too) or
    :func:`.compiled.cross_entropy.probability_columns`. ``NotImplemented`` for what those
    do not take: no numba; an input that is not C-contiguous float32/float64 of at least
    one element; a target or weight of another dtype, or not C-contiguous (a weight not
    ``(C,)``); a row or position holding a nan or whose maximum is not finite, or whose
    sums over the target are not finite (torch's conventions there are the formula's). The
    building block of :func:`cross_entropy_probabilities` and of the Dask backend's
    chunks."""
    if not compiled.HAVE_NUMBA or input.dtype not in _FLOATS or input.ndim == 0:
        return NotImplemented
    x, p = np.asarray(input), np.asarray(target)
    if x.size == 0 or p.dtype != x.dtype or p.shape != x.shape:
        return NotImplemented
    if not (x.flags.c_contiguous and p.flags.c_contiguous):
        return NotImplemented
    c = x.shape[0 if x.ndim == 1 else 1]
    n = 1 if x.ndim == 1 else x.shape[0]
    d = x.size // (n * c)
    if weight is None:
        w = np.ones(c, x.dtype)
    else:
        w = np.asarray(weight)
        if w.dtype != x.dtype or w.shape != (c,) or not w.flags.c_contiguous:
            return NotImplemented
    gradient = gradient_scale is not None
    arguments = (w, float(np.sum(w, dtype=np.float64)), float(label_smoothing),
                 float(gradient_scale) if gradient else 1.0)
    kernels = compiled.load("cross_entropy")
    if d == 1:  # rows: (C,), (N, C), or (N, C, 1, ..., 1)
        x2, p2 = x.reshape(n, c), p.reshape(n, c)
        losses, bad = np.empty(n), np.empty(n, np.uint8)
        g = np.empty_like(x2) if gradient else np.empty((0, c), x.dtype)
        rows, blocks = _plain_rows(kernels.probability_rows, x2)
        rows(blocks, x2, p2, *arguments, losses, bad, g)
    else:
        x3, p3 = x.reshape(n, c, d), p.reshape(n, c, d)
        losses, bad = np.empty((n, d)), np.empty((n, d), np.uint8)
        g = np.empty_like(x3) if gradient else np.empty((0, c, d), x.dtype)
        kernels.probability_columns(x3, p3, *arguments, _probability_width(n, d), losses,
                                    bad, g)
    if bad.any():
        return NotImplemented
    return losses, (g.reshape(x.shape) if gradient else None)


#: The most positions of a block of :func:`.compiled.cross_entropy.probability_columns`.
#: A block reads ``C`` runs of its width, ``D`` apart, and whole rows of a sample's ``(C,
#: D)`` are one contiguous read: at (4, 1000, 1024) float32 the forward's kernel took 2.4
#: ms with blocks of 1024 positions against 3.2-3.7 ms with 256 or 512, and 3.3 ms with
#: the class-index columns' rule (``65536 // C``: 65); at (16, 21, 16384) and (8, 150,
#: 4096), 256 to 2048 took about the same (2026-12-06, medians of 11).
_PROBABILITY_WIDTH = 2048


def _probability_width(n: int, d: int) -> int:
    """The ``width`` of :func:`.compiled.cross_entropy.probability_columns` for ``n``
    samples of ``d`` positions: up to :data:`_PROBABILITY_WIDTH`, halved (down to 256)
    while there are fewer blocks than threads (one sample of 1024 positions: two blocks
    of 512 on two threads)."""
    width = min(d, _PROBABILITY_WIDTH)
    while width > 256 and n * -(-d // width) < get_threads():
        width = -(-width // 2)
    return width


def _ce_reduce(losses, denominator, reduction, dtype, shape):
    if reduction == "none":
        return losses.reshape(shape).astype(dtype)
    return reduced_result(np.sum(losses, dtype=np.float64), denominator, reduction, dtype)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``cross_entropy`` of class indices by one blocked pass, in ``input``'s dtype; of class
    probabilities by :func:`cross_entropy_probabilities`.

    Other dtypes, ``C == 0`` and inputs of fewer than ``_CE_MIN_ELEMENTS`` elements decline
    (``NotImplemented``). float16 class-index input computes in float32.
    """
    if input.size < _CE_MIN_ELEMENTS:
        return NotImplemented
    if _probability_targets(target):
        return cross_entropy_probabilities(input, target, weight, reduction=reduction,
                                           label_smoothing=label_smoothing, gradient=False)
    if _ce_declines(input, target):
        return NotImplemented
    x3, t2 = _ce_problem(input, target)
    p = _CrossEntropyPass(x3, t2, weight, ignore_index, label_smoothing)
    p.run()
    denominator = _ce_denominator(p) if reduction == "mean" else 1.0
    return _ce_reduce(p.losses(), denominator, reduction, input.dtype, np.shape(target))


def _plain_weight(input, target, weight, ignore_index, reduction):
    """``(weight, weighted, W)`` as the row kernels take the weight (``ones(1)`` and False
    without one; ``W`` its float64 sum, ``C`` without one) for a plain call of
    :func:`cross_entropy_plain` and :func:`cross_entropy_and_grad_plain`, else ``None``."""
    if not (compiled.HAVE_NUMBA and type(input) is np.ndarray and type(target) is np.ndarray
            and input.ndim == 2 and target.ndim == 1 and input.dtype in _FLOATS
            and target.dtype == _INT64 and (input.flags.c_contiguous or _rows_apart(input))
            and type(ignore_index) is int and _INT64_MIN <= ignore_index <= _INT64_MAX
            and reduction in ("none", "mean", "sum")):
        return None
    n, c = input.shape
    if n == 0 or c == 0 or target.shape[0] != n:
        return None
    if weight is None:
        return _NO_WEIGHT[input.dtype], False, float(c)
    if (type(weight) is np.ndarray and weight.dtype == input.dtype and weight.shape == (c,)
            and weight.flags.c_contiguous):
        return weight, True, float(np.sum(weight, dtype=np.float64))
    return None


def _plain_probabilities(input, target, weight, ignore_index, reduction) -> bool:
    """Whether a call of :func:`cross_entropy_plain` or :func:`cross_entropy_and_grad_plain`
    is a plain one of class probabilities, which :func:`cross_entropy_probabilities` takes
    at any size: NumPy arrays, a float32/float64 input of at least one dimension and a
    target of its shape and dtype, a weight ``None`` or an array of that dtype (its shape
    checked there), a negative ``ignore_index`` (torch raises for another: the checked
    path does) and a known reduction. The written-once formula and its checks took 50 us
    at 64 x 1000 float32, torch 40 us (2026-12-06)."""
    return (type(input) is np.ndarray and type(target) is np.ndarray
            and input.dtype in _FLOATS and target.dtype == input.dtype
            and input.ndim >= 1 and target.shape == input.shape
            and (weight is None or (type(weight) is np.ndarray
                                    and weight.dtype == input.dtype))
            and type(ignore_index) is int and ignore_index < 0
            and reduction in ("none", "mean", "sum"))


def _kernel_weight(weight, smoothing, c, dtype):
    """The ``w`` of the compiled row and column kernels: ``weight`` (``(C,)``, ``dtype``), else
    ``C`` ones with label smoothing (the kernels weigh the smoothing sum by ``w`` alone,
    :mod:`.compiled.cross_entropy`), else ``ones(1)``, which they do not read."""
    if weight is not None:
        return weight
    return np.ones(c, dtype) if smoothing else _NO_WEIGHT[np.dtype(dtype)]


def _plain_rows(kernel, input, strided_kernel=None):
    """The row kernel for ``input`` ``(N, C)`` (``kernel``; ``strided_kernel`` where the input
    is not C-contiguous) and its ``blocks`` argument: the serial copy and one block below
    :data:`_CE_SERIAL_WORK`."""
    n, c = input.shape
    kernel = kernel if input.flags.c_contiguous else strided_kernel
    if n * (c + _CE_ROW_ELEMENTS) < _CE_SERIAL_WORK:
        return kernel.serial, 1
    return kernel, compiled.load("cross_entropy").row_blocks(input.shape[0])


def cross_entropy_plain(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``cross_entropy`` of a plain call, at any size, by the compiled row pass and a compiled
    loop over the rows' targets (:func:`.compiled.cross_entropy.row_losses`), or
    ``NotImplemented``.

    A registry kernel of stage ``'first'``: it takes the public arguments unchecked
    (``label_smoothing`` checked already) and declines all but the plain call, so that
    anyloss's checked path answers, and raises its errors, for the rest: numba
    installed; a float32/float64 ``(N, C)`` NumPy array with ``N, C > 0``, C-contiguous
    or with its rows apart (:func:`_rows_apart`); int64 targets ``(N,)``, each a class or
    ``ignore_index`` (a Python int); a weight ``None`` or ``(C,)`` of the input's dtype,
    C-contiguous; and no row holding a nan or with a maximum that is not finite (torch's
    conventions there are the checked path's). On small problems the checks of the
    checked path and the dozen array calls around its pass cost more than the pass itself
    (at 256 x 1000 float32, about 80 against 46 microseconds). A plain call with class
    probabilities goes to :func:`cross_entropy_probabilities` at any size
    (:func:`_plain_probabilities`).
    """
    if _plain_probabilities(input, target, weight, ignore_index, reduction):
        return cross_entropy_probabilities(input, target, weight, reduction=reduction,
                                           label_smoothing=label_smoothing, gradient=False)
    plain = _plain_weight(input, target, weight, ignore_index, reduction)
    if plain is None:
        return NotImplemented
    (n, c), dtype = input.shape, input.dtype
    eps = float(label_smoothing)
    kernels = compiled.load("cross_entropy")
    peak, bad = np.empty(n, dtype), np.empty(n, np.uint8)
    total, smooth = np.empty(n), np.empty(n)
    forward, blocks = _plain_rows(kernels.forward_rows, input, kernels.forward_strided_rows)
    forward(blocks, input, _kernel_weight(weight, eps != 0, c, dtype), eps != 0, peak, total,
            smooth, bad)
    return _plain_loss(input, target, plain, ignore_index, eps, reduction, peak, total, smooth,
                       bad)


def _plain_loss(input, target, plain, ignore_index, eps, reduction, peak, total, smooth, bad):
    """The reduced (or unreduced) loss of a plain call from its row pass's results, by
    :func:`.compiled.cross_entropy.row_losses`; ``NotImplemented`` where it stops (a
    target out of range, a row flagged ``bad``). ``plain`` is :func:`_plain_weight`'s."""
    w, weighted, w_total = plain
    losses = np.empty(input.shape[0])
    loss_sum, weights, stop = compiled.load("cross_entropy").row_losses(
        input, target, w, weighted, ignore_index, eps, w_total, peak, total, smooth, bad,
        losses)
    if stop >= 0:
        return NotImplemented
    if reduction == "none":
        return losses.astype(input.dtype)
    return reduced_result(loss_sum, weights, reduction, input.dtype)


def cross_entropy_and_grad_plain(input, target, weight, *, ignore_index, reduction,
                                 label_smoothing):
    """``cross_entropy_and_grad`` of a plain call (as :func:`cross_entropy_plain` takes it), at
    any size, or ``NotImplemented``: the per-row coefficients of the gradient by one
    compiled loop (:func:`.compiled.cross_entropy.row_coefficients`, which checks the
    targets first), the gradient by the compiled row pass, the losses by
    :func:`.compiled.cross_entropy.row_losses`. A registry kernel of stage ``'first'``;
    class probabilities as :func:`cross_entropy_plain` takes them."""
    if _plain_probabilities(input, target, weight, ignore_index, reduction):
        return cross_entropy_probabilities(input, target, weight, reduction=reduction,
                                           label_smoothing=label_smoothing, gradient=True)
    plain = _plain_weight(input, target, weight, ignore_index, reduction)
    if plain is None:
        return NotImplemented
    w, weighted, w_total = plain
    (n, c), dtype = input.shape, input.dtype
    eps = float(label_smoothing)
    kernels = compiled.load("cross_entropy")
    safe = np.empty(n, np.int64)
    factor, spread, hit, a, peak = (np.empty(n, dtype) for _ in range(5))
    if kernels.row_coefficients(target, w, weighted, ignore_index, c, eps, w_total,
                                reduction == "mean", safe, factor, spread, hit) >= 0:
        return NotImplemented
    grad = np.empty_like(input)
    bad = np.empty(n, np.uint8)
    total, smooth = np.empty(n), np.empty(n)
    rows, blocks = _plain_rows(kernels.gradient_rows, input, kernels.gradient_strided_rows)
    rows(blocks, input, safe, _kernel_weight(weight, eps != 0, c, dtype), eps != 0, factor,
         spread, hit, peak, total, smooth, bad, a, grad)
    loss = _plain_loss(input, target, plain, ignore_index, eps, reduction, peak, total, smooth,
                       bad)
    return NotImplemented if loss is NotImplemented else (loss, grad)


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``(loss, grad)``: the loss as :func:`cross_entropy` and its gradient wrt ``input``,
    from one blocked pass (:func:`blocked_cross_entropy_and_grad`; class probabilities:
    :func:`cross_entropy_probabilities`); small inputs decline to the generic formula, as
    in :func:`cross_entropy`."""
    if input.size < _CE_MIN_ELEMENTS:
        return NotImplemented
    if _probability_targets(target):
        return cross_entropy_probabilities(input, target, weight, reduction=reduction,
                                           label_smoothing=label_smoothing, gradient=True)
    return blocked_cross_entropy_and_grad(input, target, weight, ignore_index=ignore_index,
                                          reduction=reduction, label_smoothing=label_smoothing)


def blocked_cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction,
                                   label_smoothing, denominator=None):
    """``(loss, grad)``: the loss as :func:`cross_entropy` and its gradient wrt ``input``.

    The gradient comes from the same blocked pass, whatever the input's size. For
    ``reduction='none'`` it is the gradient of the losses' sum. ``denominator``
    overrides the 'mean' one (the Dask path passes the whole array's to each chunk).
    """
    if _ce_declines(input, target):
        return NotImplemented
    x3, t2 = _ce_problem(input, target)
    p = _CrossEntropyPass(x3, t2, weight, ignore_index, label_smoothing)
    if reduction == "mean":
        d = _ce_denominator(p) if denominator is None else float(denominator)
        scale = 1.0 / d if d != 0 else math.nan
    else:
        d, scale = 1.0, 1.0
    p.with_gradient(scale)
    p.run()
    loss = _ce_reduce(p.losses(), d, reduction, input.dtype, np.shape(target))
    return loss, _ce_gradient(p.grad, input)
