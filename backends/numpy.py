"""NumPy fast paths.

CTC has two engines here. With numba installed (the optional extra
``pip install "numba>=0.60"``), compiled loops run one sample per thread:
the forward pass in probability space with a rescaling at each frame, as in
Graves et al. (2006), section 4.1, which needs no ``exp``/``log`` per state, and
that sample is recomputed in log space whenever a forward variable comes near
float64's underflow, so that the answer is the exact loss; the gradient is the
log-space alpha-beta recursion. Without numba, the forward pass is log space
vectorized over batch and states, and the gradient is left to the generic
array-API alpha-beta recursion.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # optional extra
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

#: Whether the compiled kernels are available (tests run both engines where they can).
HAVE_NUMBA = numba is not None


def _extended_labels(targets, target_lengths, max_target_length, blank, n_classes):
    """(N, 2S+1) blank-extended labels and (N, 2S+1) "a skip from s-2 is allowed"."""
    tl = np.asarray(target_lengths, dtype=np.int64)
    batch, size = tl.shape[0], max_target_length
    targets = np.asarray(targets)
    positions = np.arange(size)
    valid = positions[None, :] < tl[:, None]
    if targets.ndim == 2:
        padded = targets[:, :size]
    elif targets.shape[0] == 0 or size == 0:
        padded = np.full((batch, size), blank)
    else:
        starts = np.cumsum(tl) - tl
        padded = targets[np.clip(starts[:, None] + positions, 0, targets.shape[0] - 1)]
    # Labels were range-checked on eager input; clipping keeps lazy (Dask) input in bounds.
    padded = np.clip(np.where(valid, padded, blank), 0, n_classes - 1).astype(np.int64)
    ext = np.full((batch, 2 * size + 1), blank, dtype=np.int64)
    ext[:, 1::2] = padded
    skip = np.zeros(ext.shape, dtype=np.bool_)
    skip[:, 3::2] = padded[:, 1:] != padded[:, :-1]
    return ext, skip


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) in ``log_probs``'s dtype."""
    ext, skip = _extended_labels(targets, target_lengths, max_target_length, blank,
                                 log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    if HAVE_NUMBA:
        probs = np.exp(log_probs, dtype=np.float64)
        losses = np.empty(il.shape[0], dtype=np.float64)
        _kernels()["forward"](log_probs, probs, ext, skip, il, tl, losses)
    else:
        losses = _vectorized_forward(log_probs, ext, skip, il, tl)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and torch's gradient of their sum (T, N, C), by alpha-beta."""
    if not HAVE_NUMBA:
        return NotImplemented
    ext, skip = _extended_labels(targets, target_lengths, max_target_length, blank,
                                 log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    losses = np.empty(il.shape[0], dtype=np.float64)
    grad = np.zeros(log_probs.shape, dtype=np.float64)
    _kernels()["gradient"](log_probs, ext, skip, il, tl, bool(zero_infinity), losses, grad)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False), grad.astype(log_probs.dtype, copy=False)


# --- without numba: log space, vectorized over batch and states ----------------------------


def _vectorized_forward(log_probs, ext, skip, il, tl):
    n_frames, batch, _ = log_probs.shape
    dtype = log_probs.dtype
    n_states = ext.shape[1]
    # emissions[t, n, s] = log_probs[t, n, ext[n, s]], one frame at a time (no (T, N, 2S+1) copy).
    flat = (np.arange(batch)[:, None] * log_probs.shape[2] + ext).ravel()
    frames = log_probs.reshape(n_frames, -1)
    skip_add = np.where(skip, 0.0, -np.inf).astype(dtype)
    floor = dtype.type(-1e30)
    # Two columns of -inf on the left make the shifted reads plain views.
    cur = np.full((batch, n_states + 2), -np.inf, dtype=dtype)
    nxt = cur.copy()
    cur[:, 2] = 0.0  # before the first frame: all mass in state 0 (log 1)
    peak, two_back, total, term = (np.empty((batch, n_states), dtype=dtype) for _ in range(4))
    running = il > 0
    for t in range(n_frames):
        a1, a2 = cur[:, 2:], cur[:, 1:-1]
        np.add(cur[:, :-2], skip_add, out=two_back)
        np.maximum(a1, a2, out=peak)
        np.maximum(peak, two_back, out=peak)
        np.maximum(peak, floor, out=peak)
        np.subtract(a1, peak, out=total)
        np.exp(total, out=total)
        for other in (a2, two_back):
            np.subtract(other, peak, out=term)
            np.exp(term, out=term)
            total += term
        out = nxt[:, 2:]
        with np.errstate(divide="ignore"):
            np.log(total, out=out)
        out += peak
        out += frames[t].take(flat).reshape(batch, n_states)
        if t == 0:
            out[~running] = cur[~running, 2:]
        else:
            stopped = t >= il
            if stopped.any():
                out[stopped] = cur[stopped, 2:]
        cur, nxt = nxt, cur
    alpha = cur[:, 2:].astype(np.float64)
    rows = np.arange(batch)
    end = alpha[rows, 2 * tl]
    before = np.where(tl > 0, alpha[rows, np.maximum(2 * tl - 1, 0)], -np.inf)
    return -np.logaddexp(end, before)


# --- with numba: compiled per-sample loops ------------------------------------------------

#: A rescaled forward variable below this (the frame's largest is 1) may lose digits in the
#: next frames: the sample is then recomputed in log space.
_UNDERFLOW_GUARD = 1e-280


@functools.cache
def _kernels() -> dict:  # pragma: no cover - body runs compiled
    """The CTC kernels, compiled (or loaded from numba's cache) on first use."""
    njit = numba.njit
    prange = numba.prange

    @njit(cache=True, fastmath=False)
    def logsumexp3(a, b, c):
        m = max(a, max(b, c))
        if m == -math.inf:
            return -math.inf
        return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m))

    @njit(cache=True)
    def forward_log(log_probs, n, ext, skip, length, n_states, alpha):
        """Fill alpha (T, n_states) in log space for sample n; return the log-likelihood."""
        for s in range(n_states):
            alpha[0, s] = -math.inf
        alpha[0, 0] = log_probs[0, n, ext[0]]
        if n_states > 1:
            alpha[0, 1] = log_probs[0, n, ext[1]]
        for t in range(1, length):
            for s in range(n_states):
                a1 = alpha[t - 1, s]
                a2 = alpha[t - 1, s - 1] if s > 0 else -math.inf
                a3 = alpha[t - 1, s - 2] if s > 1 and skip[s] else -math.inf
                alpha[t, s] = logsumexp3(a1, a2, a3) + log_probs[t, n, ext[s]]
        last = alpha[length - 1, n_states - 1]
        prev = alpha[length - 1, n_states - 2] if n_states > 1 else -math.inf
        return logsumexp3(last, prev, -math.inf)

    @njit(cache=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
    def forward_scaled(probs, n, ext, skipf, length, n_states, a, b):
        """Log-likelihood of sample n in rescaled probability space; nan if it may be inexact.

        ``a`` and ``b`` are two zeroed buffers of n_states + 2 (state s lives at s + 2, so
        that the reads of s - 1 and s - 2 need no test). A frame stores its values
        unscaled; the next frame divides by their peak.
        """
        a[2] = probs[0, n, ext[0]]
        if n_states > 1:
            a[3] = probs[0, n, ext[1]]
        peak = max(a[2], a[3])
        if not (peak > _UNDERFLOW_GUARD):
            return math.nan
        log_scale = math.log(peak)
        inv = 1.0 / peak
        for t in range(1, length):
            low = max(0, n_states - 2 * (length - t))  # states below cannot reach the end
            high = min(n_states, 2 * t + 2)  # states above are not reached yet
            peak = 0.0
            lost = 0
            for s in range(low, high):
                inflow = a[s + 2] + a[s + 1] + skipf[s] * a[s]
                value = inflow * probs[t, n, ext[s]] * inv
                b[s + 2] = value
                peak = max(peak, value)
                lost += (inflow > 0.0) & (value < _UNDERFLOW_GUARD)
            if lost or not (peak > 0.0):
                return math.nan
            log_scale += math.log(peak)
            inv = 1.0 / peak
            a, b = b, a
        last = a[n_states + 1]
        if n_states > 1:
            last += a[n_states]
        if not (last > 0.0):
            return math.nan
        return math.log(last * inv) + log_scale

    @njit(cache=True, parallel=True)
    def forward(log_probs, probs, ext, skip, il, tl, losses):
        batch = il.shape[0]
        skipf = skip.astype(np.float64)
        for n in prange(batch):
            length, n_states = il[n], 2 * tl[n] + 1
            if length == 0:
                losses[n] = 0.0 if tl[n] == 0 else math.inf
                continue
            ll = forward_scaled(probs, n, ext[n], skipf[n], length, n_states,
                                np.zeros(n_states + 2), np.zeros(n_states + 2))
            if math.isnan(ll):
                alpha = np.empty((length, n_states))
                ll = forward_log(log_probs, n, ext[n], skip[n], length, n_states, alpha)
            losses[n] = -ll

    @njit(cache=True, parallel=True)
    def gradient(log_probs, ext, skip, il, tl, zero_infinity, losses, grad):
        batch = il.shape[0]
        n_classes = log_probs.shape[2]
        for n in prange(batch):
            length, n_states = il[n], 2 * tl[n] + 1
            if length == 0:
                losses[n] = 0.0 if tl[n] == 0 else math.inf
                continue
            labels = ext[n]
            alpha = np.empty((length, n_states))
            ll = forward_log(log_probs, n, labels, skip[n], length, n_states, alpha)
            losses[n] = -ll
            if ll == -math.inf:
                value = 0.0 if zero_infinity else math.nan
                for t in range(length):
                    for c in range(n_classes):
                        grad[t, n, c] = value
                continue
            beta = np.full(n_states, -math.inf)
            beta[n_states - 1] = log_probs[length - 1, n, labels[n_states - 1]]
            if n_states > 1:
                beta[n_states - 2] = log_probs[length - 1, n, labels[n_states - 2]]
            posterior = np.empty(n_classes)
            for t in range(length - 1, -1, -1):
                if t < length - 1:
                    for s in range(n_states):  # upwards: reads of s+1, s+2 are frame t+1
                        b1 = beta[s]
                        b2 = beta[s + 1] if s + 1 < n_states else -math.inf
                        b3 = beta[s + 2] if s + 2 < n_states and skip[n, s + 2] else -math.inf
                        beta[s] = logsumexp3(b1, b2, b3) + log_probs[t, n, labels[s]]
                for c in range(n_classes):
                    posterior[c] = 0.0
                for s in range(n_states):
                    c = labels[s]
                    posterior[c] += math.exp(alpha[t, s] + beta[s] - log_probs[t, n, c] - ll)
                for c in range(n_classes):
                    grad[t, n, c] = math.exp(log_probs[t, n, c]) - posterior[c]

    return {"forward": forward, "gradient": gradient}


# --- cross entropy: blocked log-sum-exp over row blocks, on a small thread pool -----------
#
# The log-softmax is never materialised. Each worker takes a block of rows (or, for a
# K-dimensional input, of (sample, position) columns) small enough to stay in its L2
# cache, copies it shifted by the row maximum into a scratch buffer, reads the target's
# shifted logit and the smoothing sum there, exponentiates in place and sums: one read
# of the input from memory. The per-row log-sum-exp of the shifted logits follows;
# this is the blocked ("online") normaliser of Milakov & Gimelshein, *Online normalizer
# calculation for softmax* (2018), with the whole row of a block in cache instead of a
# running maximum. The gradient, when asked for, is written by the same pass from the
# cached exponentials: softmax minus the smoothed one-hot, scaled by the weights and the
# reduction's denominator. NumPy releases the GIL in its loops, so a few threads over
# blocks use every core.

#: Elements of the compute dtype in one worker's block (256 KiB of float32).
_CE_BLOCK_ELEMENTS = 1 << 16
#: Inputs smaller than this (elements) run on the calling thread.
_CE_PARALLEL_ELEMENTS = 1 << 20
#: Inputs smaller than this (elements) decline to the generic formula, whose dozen NumPy
#: calls cost less than setting up the pass (measured on 2 cores: the formula takes 38 us
#: against the pass's 63 us at 64 x 10; the two are about even at 2^15 elements, and the
#: pass is 1.4x faster at 2^18).
_CE_MIN_ELEMENTS = 1 << 15
_CE_POOL: list = []
_CE_POOL_LOCK = threading.Lock()
_CE_SCRATCH = threading.local()


def _ce_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _ce_pool() -> ThreadPoolExecutor:
    with _CE_POOL_LOCK:
        if not _CE_POOL:
            _CE_POOL.append(ThreadPoolExecutor(_ce_workers(), thread_name_prefix="anyloss-ce"))
        return _CE_POOL[0]


def _ce_scratch(size: int, dtype) -> np.ndarray:
    """This thread's scratch buffer of at least ``size`` elements of ``dtype``."""
    buf = getattr(_CE_SCRATCH, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = np.empty(max(size, _CE_BLOCK_ELEMENTS), dtype=dtype)
        _CE_SCRATCH.buf = buf
    return buf


class _CrossEntropyPass:
    """One blocked pass of cross entropy over a class-index problem.

    ``x3`` is the input as ``(N, C, D)`` (class axis 1; ``D == 1`` for the common
    ``(N, C)`` case), ``target`` ``(N, D)``. :meth:`run` fills, per target element,
    the shift (row maximum), the sum of the shifted exponentials and, with label
    smoothing, the weighted sum of the shifted logits; :meth:`losses` turns them
    into the unreduced losses. After :meth:`with_gradient`, the same pass also
    writes the gradient ``(N, C, D)`` in the input's dtype. The per-block work is
    a handful of NumPy calls writing into preallocated arrays, so that the Python
    overhead (which holds the GIL) stays small next to the loops (which do not).
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
        self.total = np.empty((n, d), dtype=self.cdt)
        self.smooth = np.empty((n, d), dtype=self.cdt) if self.eps > 0 else None
        # Clamping the shift at the largest float keeps a row with a +inf logit at an
        # inf loss (x - inf would be nan), as the generic formula's finite shift does.
        self.big = np.finfo(self.cdt).max
        self.grad = None
        # The compiled engine takes C-contiguous float32 rows (the common large case).
        self.compiled = (HAVE_NUMBA and x3.dtype == np.float32 and d == 1 and c > 0
                         and x3[:, :, 0].flags.c_contiguous)
        if self.compiled:
            self.smooth_kind = 0 if self.eps == 0 else (1 if self.w is None else 2)
            if self.smooth is None:
                self.smooth = np.empty((n, d), dtype=self.cdt)  # written, not used
            self.w_or_ones = np.ones(1, self.cdt) if self.w is None else self.w
            _ce_kernels()  # compile (or load) here, not in two pool threads at once

    def with_gradient(self, scale: float) -> None:
        """Also write the gradient of ``scale * sum(losses)`` during :meth:`run`."""
        # coef: d(result)/d(loss element); 0 for ignored elements, nan for invalid ones.
        coef = np.where(self.usable, scale, 0.0)
        self.coef = np.where(self.invalid, np.nan, coef)
        factor = (1.0 - self.eps) * self.w_y + (self.eps / self.n_classes) * self.w_total
        self.softmax_factor = (self.coef * factor).astype(self.cdt)
        self.a = np.empty_like(self.softmax_factor)  # softmax_factor / total, per block
        self.spread = None
        if self.eps > 0:
            self.spread = (self.coef * (self.eps / self.n_classes)).astype(self.cdt)
        elif self.compiled:
            self.spread = np.zeros_like(self.softmax_factor)  # read, multiplies nothing
        self.grad = np.empty(self.x3.shape, dtype=self.x3.dtype)

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
        blocks = self.blocks()
        if self.x3.shape[2] != 1:
            do = self._columns
        else:
            do = self._rows_compiled if self.compiled else self._rows
        if self.x3.size < _CE_PARALLEL_ELEMENTS or len(blocks) < 2 or _ce_workers() == 1:
            self._do(do, blocks)
        else:
            tasks = min(len(blocks), 4 * _ce_workers())
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

    def _rows(self, n0, n1, _d0, _d1):
        """Block of whole rows, class axis last: ``x[n0:n1, :, 0]``."""
        c, nb = self.n_classes, n1 - n0
        v = self.x3[n0:n1, :, 0]
        buf = _ce_scratch(nb * c, self.cdt)[: nb * c].reshape(nb, c)
        peak, total = self.peak[n0:n1, 0], self.total[n0:n1, 0]
        np.max(v, axis=1, out=peak)
        np.minimum(peak, self.big, out=peak)
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

    def _rows_compiled(self, n0, n1, d0, d1):
        """:meth:`_rows` by the numba kernels: NumPy's row maximum, then one compiled loop.

        A block with a non-finite maximum (an inf or nan logit) goes to :meth:`_rows`,
        whose NumPy arithmetic propagates them as the generic formula does.
        """
        v = self.x3[n0:n1, :, 0]
        peak = self.peak[n0:n1, 0]
        np.max(v, axis=1, out=peak)
        if not np.isfinite(peak).all():
            self._rows(n0, n1, d0, d1)
            return
        kernels = _ce_kernels()
        total, smooth = self.total[n0:n1, 0], self.smooth[n0:n1, 0]
        if self.grad is None:
            kernels["forward"](v, peak, self.w_or_ones, self.smooth_kind, total, smooth)
        else:
            kernels["gradient"](v, peak, self.w_or_ones, self.smooth_kind,
                                self.softmax_factor[n0:n1, 0], self.spread[n0:n1, 0],
                                total, smooth, self.a[n0:n1, 0], self.grad[n0:n1, :, 0])

    def _columns(self, n0, n1, d0, d1):
        """Block ``x[n0:n1, :, d0:d1]``, class axis in the middle (K-dimensional input)."""
        c, nb, dl = self.n_classes, n1 - n0, d1 - d0
        v = self.x3[n0:n1, :, d0:d1]
        buf = _ce_scratch(nb * c * dl, self.cdt)[: nb * c * dl].reshape(nb, c, dl)
        peak, total = self.peak[n0:n1, d0:d1], self.total[n0:n1, d0:d1]
        np.max(v, axis=1, out=peak)
        np.minimum(peak, self.big, out=peak)
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

    def _subtract_targets(self):
        """The one-hot part of the gradient: ``coef * (1 - eps) * w[y]`` off each target's logit."""
        n, c, d = self.x3.shape
        hit = self.coef * (1.0 - self.eps) * self.w_y
        flat = (np.arange(n)[:, None] * (c * d) + self.t * d + np.arange(d)[None, :]).ravel()
        grad = self.grad.reshape(-1)
        grad[flat] = (grad[flat].astype(self.cdt) - hit.ravel().astype(self.cdt))

    def losses(self):
        """Unreduced losses ``(N, D)`` in float64: 0 where ignored, nan where invalid."""
        shifted = np.take_along_axis(self.x3, self.t[:, None, :], axis=1)[:, 0, :]
        picked = np.subtract(shifted, self.peak, dtype=self.cdt).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_total = np.log(self.total.astype(np.float64))
            loss = self.w_y * (log_total - picked)
            if self.eps > 0:
                spread = self.w_total * log_total - self.smooth
                loss = (1.0 - self.eps) * loss + (self.eps / self.n_classes) * spread
        loss = np.where(self.usable, loss, 0.0)
        return np.where(self.invalid, np.nan, loss)


def cross_entropy_targets(target, weight, n_classes, ignore_index):
    """Per target element: ``usable``, ``invalid`` (neither ignored nor in ``[0, C)``), the
    index to read (0 where not usable) and the 'mean' weight ``w[y]`` (0 where not usable)."""
    t = np.asarray(target)
    ignored = _ce_equal(t, ignore_index)
    in_range = (t >= 0) & ~_ce_at_least(t, n_classes)
    usable = in_range & ~ignored
    invalid = ~ignored & ~in_range
    safe = np.where(usable, t, 0).astype(np.intp)
    if weight is None:
        w_y = usable.astype(np.float64)
    else:
        w_y = np.where(usable, np.asarray(weight, dtype=np.float64).reshape(-1)[safe], 0.0)
    return usable, invalid, safe, w_y


def _ce_equal(t, value):
    info = np.iinfo(t.dtype)
    if not info.min <= value <= info.max:
        return np.zeros(t.shape, dtype=bool)
    return t == value


def _ce_at_least(t, value):
    if value > np.iinfo(t.dtype).max:
        return np.zeros(t.shape, dtype=bool)
    return t >= value


def _ce_problem(input, target):
    """``input`` as ``(N, C, D)`` (a view when its layout allows) and ``target`` as ``(N, D)``."""
    if input.ndim == 1:
        return input.reshape(1, input.shape[0], 1), np.asarray(target).reshape(1, 1)
    n, c = input.shape[:2]
    d = math.prod(input.shape[2:])
    return input.reshape(n, c, d), np.asarray(target).reshape(n, d)


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


def _ce_reduce(losses, denominator, reduction, dtype, shape):
    if reduction == "none":
        return losses.reshape(shape).astype(dtype)
    total = np.sum(losses, dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, dtype=dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / denominator if denominator != 0 else np.nan
    return np.asarray(mean, dtype=dtype)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``cross_entropy`` of class indices by one blocked pass, in ``input``'s dtype.

    Probability targets, other dtypes, ``C == 0`` and inputs of fewer than
    ``_CE_MIN_ELEMENTS`` elements decline (``NotImplemented``). float16 computes in
    float32.
    """
    if input.size < _CE_MIN_ELEMENTS or _ce_declines(input, target):
        return NotImplemented
    x3, t2 = _ce_problem(input, target)
    p = _CrossEntropyPass(x3, t2, weight, ignore_index, label_smoothing)
    p.run()
    denominator = _ce_denominator(p) if reduction == "mean" else 1.0
    return _ce_reduce(p.losses(), denominator, reduction, input.dtype, np.shape(target))


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``(loss, grad)``: the loss as :func:`cross_entropy` and its gradient wrt ``input``,
    from one blocked pass (:func:`blocked_cross_entropy_and_grad`); small inputs decline
    to the generic formula, as in :func:`cross_entropy`."""
    if input.size < _CE_MIN_ELEMENTS:
        return NotImplemented
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
    return loss, p.grad.reshape(input.shape)


# --- building blocks of the generic formulas (looked up by anyloss._array.native) --------
# NumPy has no autograd, so these need no gradient care: they save passes and
# temporaries (ufuncs writing into their own output) and skip array-api-compat's wrappers.


def _fresh(a) -> bool:
    """Whether a ufunc result is an array that may be written in place (not a scalar)."""
    return type(a) is np.ndarray


def _log1p_exp_minus_abs(x):
    """``log1p(exp(-|x|))``, the correction term of softplus and log-sigmoid."""
    out = np.abs(x)
    if not _fresh(out):
        return np.log1p(np.exp(-out))
    np.negative(out, out=out)
    np.exp(out, out=out)
    return np.log1p(out, out=out)


def _log_sigmoid(x):
    # min(x, 0) - log1p(exp(-|x|)): the arithmetic of -logaddexp(0, -x), but with
    # vectorised exp and log1p (NumPy's logaddexp loop is several times slower).
    return np.subtract(np.minimum(x, 0.0), _log1p_exp_minus_abs(x))


def _softplus(x):
    return np.add(np.maximum(x, 0.0), _log1p_exp_minus_abs(x))


def _xlogy(x, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        product = x * np.log(y)
    return np.where(x == 0, 0.0, product)


def _clamped_log(x, floor):
    with np.errstate(divide="ignore"):
        out = np.log(x)
    return np.maximum(out, floor, out=out) if _fresh(out) else np.maximum(out, floor)


def _clamped_log1p(x, floor):
    with np.errstate(divide="ignore"):
        out = np.log1p(x)
    return np.maximum(out, floor, out=out) if _fresh(out) else np.maximum(out, floor)


def _sum_of_products(a, b, axis):
    if not hasattr(np, "vecdot"):  # NumPy < 2
        return NotImplemented
    return np.vecdot(a, b, axis=axis)


def _mean(x):
    # np.mean's own arithmetic (a pairwise sum, then one division in the sum's dtype)
    # without its Python-level argument handling, which costs more than the sum on
    # small arrays.
    total = np.add.reduce(x, axis=None)
    return total.dtype.type(total / x.size)


def _log_softmax(x, axis):
    # The generic formula's arithmetic, (x - shift) - log(sum(exp(x - shift))), with the
    # shift the row maximum (0 for a non-finite one); the exponentials and the final
    # subtraction reuse their operands' memory.
    if x.size == 0 or type(x) is not np.ndarray:
        return NotImplemented
    peak = np.maximum.reduce(x, axis=axis, keepdims=True)
    if not np.isfinite(peak).all():
        peak = np.where(np.isfinite(peak), peak, 0.0).astype(x.dtype)
    shifted = np.subtract(x, peak)
    exp = np.exp(shifted)
    total = np.add.reduce(exp, axis=axis, keepdims=True)
    return np.subtract(shifted, np.log(total, out=total), out=shifted)


def _take_along_axis(x, indices, axis):
    # For a C-contiguous x, one flat ``take`` at computed offsets: NumPy's
    # take_along_axis builds an index array per axis and fancy-indexes with all of them.
    if (type(x) is not np.ndarray or not x.flags.c_contiguous or indices.ndim != x.ndim
            or x.ndim == 0):
        return NotImplemented
    axis %= x.ndim
    if any(i != n for d, (i, n) in enumerate(zip(indices.shape, x.shape)) if d != axis):
        return NotImplemented  # broadcasting to do: NumPy's own
    offsets = indices.astype(np.intp, copy=False)
    step = x.strides[axis] // x.itemsize
    if step != 1:
        offsets = offsets * step
    for d, n in enumerate(x.shape):
        if d != axis and n != 1:
            shape = [1] * x.ndim
            shape[d] = n
            offsets = offsets + (np.arange(n, dtype=np.intp) * (x.strides[d] // x.itemsize)
                                 ).reshape(shape)
    return x.reshape(-1).take(offsets)


def _sum(x, axis):
    # np.sum's own reduction without its Python-level argument handling; floating
    # arrays only (np.add.reduce of booleans is a logical or, not a count).
    if type(x) is not np.ndarray or x.dtype.kind not in "fc":
        return NotImplemented
    return np.add.reduce(x, axis=axis)


def _extrema(x):
    return np.minimum.reduce(x, axis=None).item(), np.maximum.reduce(x, axis=None).item()


#: Elements per block of anyloss._ops.reduce_blockwise: 512 KiB of float32, within a
#: core's L2 cache (measured on a 2-core EPYC: 16K elements per block is 1.5x slower).
BLOCK_ELEMENTS = 1 << 17

BUILDING_BLOCKS = {
    "log_sigmoid": _log_sigmoid,
    "softplus": _softplus,
    "xlogy": _xlogy,
    "clamp_min_identity_gradient": lambda x, lower: np.maximum(x, lower),
    "relu": lambda x: np.maximum(x, 0.0),
    "positive_part": lambda x: np.maximum(x, 0.0),
    "clip": np.clip,
    "clamped_log": _clamped_log,
    "clamped_log1p": _clamped_log1p,
    "sum_of_products": _sum_of_products,
    "clamp_min": np.maximum,
    "sqrt_zero_gradient": np.sqrt,
    "mean": _mean,
    "sum": _sum,
    "extrema": _extrema,
    "log_softmax": _log_softmax,
    "take_along_axis": _take_along_axis,
    "blockwise_elements": lambda arrays: BLOCK_ELEMENTS,
}


# --- cross entropy, compiled (numba, float32 rows): subtract, exp and sum in one loop ----
#
# NumPy's blocked pass above makes four sweeps over each cached block (subtract, exp,
# sum, and the smoothing sum). With numba, the row maximum still comes from NumPy (its
# reduction is vectorised; numba's is not), and one compiled loop then does the rest
# with a polynomial exp that the compiler vectorises: the single-precision Cephes
# ``expf`` (S. L. Moshier, *Methods and Programs for Mathematical Functions*, 1989),
# range reduction by ln 2 and a degree-6 polynomial, within 1 ulp over [-87, 0].
# Sums run in float32 over chunks of 2048 classes, added in float64.

@functools.cache
def _ce_kernels() -> dict:  # pragma: no cover - bodies run compiled
    """The cross-entropy kernels, compiled (or loaded from numba's cache) on first use."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    njit = numba.njit
    f32 = np.float32

    @intrinsic
    def bits_to_float32(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @njit(inline="always", fastmath=True)
    def exp_nonpositive(x):
        """``exp(x)`` for ``x <= 0`` (float32); values below -87 give exp(-87) ~ 1.6e-38."""
        x = max(x, f32(-87.0))
        k = math.floor(x * f32(1.44269504088896341) + f32(0.5))
        r = x - k * f32(0.693359375) - k * f32(-2.12194440e-4)
        p = f32(1.9875691500e-4)
        p = p * r + f32(1.3981999507e-3)
        p = p * r + f32(8.3334519073e-3)
        p = p * r + f32(4.1665795894e-2)
        p = p * r + f32(1.6666665459e-1)
        p = p * r + f32(5.0000001201e-1)
        p = p * (r * r) + r + f32(1.0)
        return p * bits_to_float32(np.int32(k + f32(127.0)) << 23)

    @njit(nogil=True, fastmath=True, cache=True)
    def forward(v, peak, w, smooth_kind, total, smooth):
        """Per row: total = sum(exp(v - peak)); smooth = sum(w * (v - peak)) (kind 2),
        sum(v - peak) (kind 1), nothing (kind 0)."""
        n_classes = v.shape[1]
        for i in range(v.shape[0]):
            m = peak[i]
            s64, t64 = 0.0, 0.0
            # Chunks as slices: loops over computed bounds (range(c0, c1)) do not vectorise.
            for c0 in range(0, n_classes, 2048):
                row = v[i, c0:c0 + 2048]
                s, t = f32(0.0), f32(0.0)
                if smooth_kind == 0:
                    for c in range(row.shape[0]):
                        s += exp_nonpositive(row[c] - m)
                elif smooth_kind == 1:
                    for c in range(row.shape[0]):
                        d = row[c] - m
                        s += exp_nonpositive(d)
                        t += d
                else:
                    wc = w[c0:c0 + 2048]
                    for c in range(row.shape[0]):
                        d = row[c] - m
                        s += exp_nonpositive(d)
                        t += wc[c] * d
                s64 += s
                t64 += t
            total[i] = s64
            smooth[i] = t64

    @njit(nogil=True, fastmath=True, cache=True)
    def gradient(v, peak, w, smooth_kind, factor, spread, total, smooth, a, g):
        """:func:`forward`, writing exp(v - peak) into g on the way; then, while the row
        is in cache, g = g * factor / total - spread * w."""
        n_classes = v.shape[1]
        for i in range(v.shape[0]):
            m = peak[i]
            s64, t64 = 0.0, 0.0
            for c0 in range(0, n_classes, 2048):
                row, out = v[i, c0:c0 + 2048], g[i, c0:c0 + 2048]
                s, t = f32(0.0), f32(0.0)
                if smooth_kind == 0:
                    for c in range(row.shape[0]):
                        e = exp_nonpositive(row[c] - m)
                        out[c] = e
                        s += e
                elif smooth_kind == 1:
                    for c in range(row.shape[0]):
                        d = row[c] - m
                        e = exp_nonpositive(d)
                        out[c] = e
                        s += e
                        t += d
                else:
                    wc = w[c0:c0 + 2048]
                    for c in range(row.shape[0]):
                        d = row[c] - m
                        e = exp_nonpositive(d)
                        out[c] = e
                        s += e
                        t += wc[c] * d
                s64 += s
                t64 += t
            total[i] = s64
            smooth[i] = t64
            scale = f32(factor[i] / s64)
            a[i] = scale
            minus = spread[i]  # 0 without smoothing
            for c0 in range(0, n_classes, 2048):
                out = g[i, c0:c0 + 2048]
                if smooth_kind == 2:
                    wc = w[c0:c0 + 2048]
                    for c in range(out.shape[0]):
                        out[c] = out[c] * scale - minus * wc[c]
                else:
                    for c in range(out.shape[0]):
                        out[c] = out[c] * scale - minus

    return {"forward": forward, "gradient": gradient}
