"""``linear_cross_entropy`` on NumPy arrays without the ``(N, C)`` logits in memory.

Forward: tiles of rows and classes (:func:`_tiled_elements`). Each tile's logits
``x_r @ W_t.T + b_t`` are written by BLAS (``np.matmul``) into one reused scratch
buffer and reduced at once by the cross-entropy pass of :mod:`.cross_entropy`
(row maxima and sums of exponentials, on the thread pool), which a running
maximum and sum combine over the tiles. One matmul in all, the floor of the
computation, in products that BLAS runs near its full speed: each packs one
block of the weight for thousands of rows, where blocks of whole rows would pack
the whole weight once per few hundred rows (at N=4096 D=1024 C=32000: 1.10x
the matmul against 1.20x; at N=1024 D=1024 C=128256: 1.13x against 1.50x).
With torch's chunking options the forward takes their blocks of whole rows.

Gradients (:func:`linear_cross_entropy_and_grad`), with ``G`` the gradient of
the loss with respect to the logits (softmax minus the smoothed one-hot, scaled
by the weights and the reduction), never stored whole: per row block, the
block's logits, one pass of the cross-entropy kernel for its losses and its
``G_r``, written over the logits in the same scratch (a second block would
halve the rows a block holds, and each row block reads the weight twice and
the weight gradient once more: at V=128256 the halved blocks ran 1.35x slower),
``grad_input[r] = G_r @ W``, and ``grad_weight += G_r.T @ x_r`` in one GEMM that
adds into its output (:func:`.blas.add_product`; where NumPy's BLAS cannot be
reached, a block of classes at a time through a small temporary). Three matmuls,
as in the definition, all from the same logits.

The blocks follow the online normaliser of Milakov & Gimelshein, *Online
normalizer calculation for softmax* (2018), with whole rows in a block.
"""

from __future__ import annotations

import math

import numpy as np

from anyloss.backends.numpy.blas import add_product
from anyloss.backends.numpy.cross_entropy import (
    cross_entropy_elements,
    cross_entropy_rows,
    cross_entropy_targets,
    row_normalisers,
    smoothed_class_losses,
)
from anyloss.backends.numpy.results import reduced_result

__all__ = [
    "linear_cross_entropy",
    "linear_cross_entropy_and_grad",
    "linear_cross_entropy_elements",
    "linear_cross_entropy_grads",
    "gradient_scale",
    "SCRATCH_BYTES",
]

#: The logits block's budget when the options leave the rows to the kernel (70 MiB; with
#: :data:`WEIGHT_PART_BYTES`, 1.95% of the float32 logits of an 8192 x 128256 problem):
#: each row block reads the whole weight twice, so the more rows it holds the better.
SCRATCH_BYTES = 70 << 20
#: The class block of the weight gradient's partial product where it is added in by NumPy
#: (no BLAS GEMM to add into it): with :data:`SCRATCH_BYTES`, under 2% of the logits of the
#: problem above.
WEIGHT_PART_BYTES = 8 << 20
#: Rows of the forward's tiles: the BLAS product of a tile packs these rows of the input,
#: and its block of classes of the weight, once per tile.
TILE_ROWS = 8192
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _problem(input, linear_weight, target, linear_bias, weight):
    """``(x (N, D), W (C, D), b, target (N,), weight)`` as the kernel takes them, or ``None``
    (declined): one floating dtype, float32 or float64, plain ndarrays, 2-d weight."""
    arrays = [a for a in (input, linear_weight, linear_bias, weight) if a is not None]
    if not all(type(a) is np.ndarray for a in arrays) or type(target) is not np.ndarray:
        return None
    dtype = input.dtype
    if dtype not in _FLOATS or any(a.dtype != dtype for a in arrays):
        return None
    if linear_weight.ndim != 2 or linear_weight.shape[0] == 0 or target.dtype.kind not in "iu":
        return None
    x = input if input.ndim == 2 else input[None, :]
    return x, linear_weight, linear_bias, target.reshape(x.shape[0]), weight


def _rows(n: int, d: int, c: int, itemsize: int, options) -> int:
    """Rows per block: the options' (torch's rule), else what fits :data:`SCRATCH_BYTES`."""
    rows = None if options is None else options.rows_per_chunk(n, d, c)
    if rows is None:
        rows = SCRATCH_BYTES // max(1, c * itemsize)
    return max(1, min(rows, n))


def _block_logits(x_rows, linear_weight, linear_bias, out):
    """``x_rows @ W.T + b`` into ``out`` (BLAS; ``W.T`` is a view, not a copy)."""
    np.matmul(x_rows, linear_weight.T, out=out)
    if linear_bias is not None:
        out += linear_bias
    return out


def _finish(losses, total_weight, reduction, dtype, unbatched):
    if reduction == "none":
        out = losses.astype(dtype)
        return out[0] if unbatched else out
    return reduced_result(float(np.sum(losses, dtype=np.float64)), total_weight, reduction,
                          dtype)


def _class_tiles(n: int, d: int, c: int, itemsize: int, options) -> tuple[int, int] | None:
    """``(rows, classes)`` of the forward's tiles within :data:`SCRATCH_BYTES`, or ``None``
    for the blocks of whole rows that the options ask for (torch's chunking rule)."""
    if options is not None and options.rows_per_chunk(n, d, c) is not None:
        return None
    rows = min(n, TILE_ROWS)
    return rows, max(1, min(c, SCRATCH_BYTES // (rows * itemsize)))


def _float64_product(a, b):
    """``a @ b`` in float64 for a float32 or float64 matrix and a vector (``(n,) @ (n, d)``
    or ``(n, d) @ (d,)``), the matrix converted by blocks of :data:`WEIGHT_PART_BYTES`, so
    that no float64 copy of it is made whole."""
    matrix, left = (b, True) if a.ndim == 1 else (a, False)
    n, d = matrix.shape
    step = max(1, WEIGHT_PART_BYTES // (d * 8))
    if left:
        out = np.zeros(d)
        for i in range(0, n, step):
            out += a[i:i + step] @ matrix[i:i + step].astype(np.float64)
        return out
    return np.concatenate([matrix[i:i + step].astype(np.float64) @ b for i in range(0, n, step)])


def _tiled_elements(x, linear_weight, target, linear_bias, weight, *, ignore_index,
                    label_smoothing, rows, cols):
    """:func:`linear_cross_entropy_elements` by tiles of ``rows`` x ``cols`` logits.

    Per row block, the classes in tiles: each tile's logits ``x_r @ W_t.T + b_t`` (BLAS,
    into the scratch), their row shifts (maxima, or a lower value) and sums of exponentials
    (the cross-entropy pass, :func:`.cross_entropy.row_normalisers`), folded into a running
    shift ``m`` and sum ``s`` in float64 (``s <- s e^(m - m') + s_t e^(m_t - m')``, the online
    normaliser of Milakov & Gimelshein, 2018), and the target's logit picked from the tile
    that holds it. The smoothing term ``sum_c w_c z_c`` is one matrix-vector product,
    ``x (W.T w) + b.w``, in float64. A tile whose row is all ``-inf`` (a bias masking
    classes) adds nothing.
    """
    n, c = x.shape[0], linear_weight.shape[0]
    usable, invalid, safe, w_y = cross_entropy_targets(target, weight, c, ignore_index)
    scratch = np.empty((rows, cols), dtype=x.dtype)
    losses = np.empty(n, dtype=np.float64)
    eps = float(label_smoothing)
    if eps > 0:
        w64 = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
        u = _float64_product(w64, linear_weight)  # (D,): sum_c w_c W_c
        bias_term = 0.0 if linear_bias is None else float(w64 @ linear_bias)
        w_total = float(np.sum(w64))
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        x_rows, t_rows = x[r0:r1], safe[r0:r1]
        peak = np.full(r1 - r0, -np.inf)
        total = np.zeros(r1 - r0)
        picked = np.empty(r1 - r0, dtype=np.float64)
        for c0 in range(0, c, cols):
            c1 = min(c0 + cols, c)
            bias = None if linear_bias is None else linear_bias[c0:c1]
            out = scratch.reshape(-1)[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            z = _block_logits(x_rows, linear_weight[c0:c1], bias, out)  # C-contiguous
            tile_peak, tile_total = row_normalisers(z)
            tile_total = np.where(tile_peak == -np.inf, 0.0, tile_total)
            with np.errstate(invalid="ignore"):
                new_peak = np.fmax(peak, tile_peak)  # nan only where the tile's is nan
                new_peak = np.where(np.isnan(tile_peak), np.nan, new_peak)
                finite = np.isfinite(new_peak)
                keep = np.where(finite, np.exp(peak - np.where(finite, new_peak, 0)), 0.0)
                add = np.where(finite, np.exp(tile_peak - np.where(finite, new_peak, 0)), 0.0)
            total = np.where(finite, total * keep + tile_total * add, tile_total)
            peak = new_peak
            here = (t_rows >= c0) & (t_rows < c1)
            picked[here] = z[np.flatnonzero(here), t_rows[here] - c0]
        with np.errstate(divide="ignore", invalid="ignore"):
            lse = peak + np.log(total)
            spread = None
            if eps > 0:
                spread = w_total * lse - (_float64_product(x_rows, u) + bias_term)
        losses[r0:r1] = smoothed_class_losses(lse - picked, spread, w_y[r0:r1], eps, c,
                                              usable[r0:r1], invalid[r0:r1])
    return losses, w_y


def linear_cross_entropy_elements(x, linear_weight, target, linear_bias, weight, *,
                                  ignore_index, label_smoothing, options):
    """Per-row losses and their 'mean' weights, both float64 ``(N,)``, of ``x`` ``(N, D)``
    (one matmul by tiles into a reused scratch, :func:`_tiled_elements`, or by the blocks of
    whole rows that torch's chunking options ask for; see the module docstring). The Dask
    backend maps this over row chunks."""
    n = x.shape[0]
    c = linear_weight.shape[0]
    tiles = _class_tiles(n, x.shape[1], c, x.dtype.itemsize, options)
    if tiles is not None:
        return _tiled_elements(x, linear_weight, target, linear_bias, weight,
                               ignore_index=ignore_index, label_smoothing=label_smoothing,
                               rows=tiles[0], cols=tiles[1])
    rows = _rows(n, x.shape[1], c, x.dtype.itemsize, options)
    scratch = np.empty((rows, c), dtype=x.dtype)
    losses = np.empty(n, dtype=np.float64)
    weights = np.empty(n, dtype=np.float64)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        logits = _block_logits(x[r0:r1], linear_weight, linear_bias, scratch[: r1 - r0])
        losses[r0:r1], weights[r0:r1] = cross_entropy_elements(
            logits, target[r0:r1], weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing)
    return losses, weights


def linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
                         ignore_index, label_smoothing, options):
    """The loss by row blocks of logits (see the module docstring), or ``NotImplemented``."""
    problem = _problem(input, linear_weight, target, linear_bias, weight)
    if problem is None:
        return NotImplemented
    x, w, b, t, class_weight = problem
    losses, weights = linear_cross_entropy_elements(
        x, w, t, b, class_weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        options=options)
    total_weight = float(np.sum(weights, dtype=np.float64))
    return _finish(losses, total_weight, reduction, x.dtype, input.ndim == 1)


def linear_cross_entropy_grads(x, linear_weight, target, linear_bias, weight, *,
                               ignore_index, label_smoothing, options, scale):
    """Per-row losses (float64 ``(N,)``) and the gradients of ``scale * sum(losses)`` with
    respect to ``x`` ``(N, D)``, the weight ``(C, D)`` and the bias (float64 ``(C,)``, or
    ``None`` without one), by row blocks (see the module docstring). The Dask backend maps
    this over row chunks, with the whole problem's ``scale``."""
    n, d = x.shape
    c = linear_weight.shape[0]
    dtype = x.dtype
    rows = _rows(n, d, c, dtype.itemsize, options)  # one block: the logits, then G_r
    scratch = np.empty((rows, c), dtype=dtype)
    losses = np.empty(n, dtype=np.float64)
    grad_input = np.empty_like(x)
    grad_weight = np.zeros_like(linear_weight)
    grad_bias = None if linear_bias is None else np.zeros(c, dtype=np.float64)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        x_rows = x[r0:r1]
        g = _block_logits(x_rows, linear_weight, linear_bias, scratch[: r1 - r0])
        losses[r0:r1] = cross_entropy_rows(g, target[r0:r1], weight,
                                           ignore_index=ignore_index,
                                           label_smoothing=label_smoothing,
                                           gradient_scale=scale, out=g)  # G_r over them
        np.matmul(g, linear_weight, out=grad_input[r0:r1])
        add_product(grad_weight, g.T, x_rows, part_bytes=WEIGHT_PART_BYTES)
        if grad_bias is not None:
            grad_bias += np.sum(g, axis=0, dtype=np.float64)
    return losses, grad_input, grad_weight, grad_bias


def gradient_scale(total_weight: float, reduction: str) -> float:
    """d(result)/d(sum of losses): ``1 / total_weight`` for the mean (nan when it is 0, as
    torch's 0/0), else 1 (the sum; and 'none', whose gradient is of the sum)."""
    if reduction != "mean":
        return 1.0
    return 1.0 / total_weight if total_weight != 0 else math.nan


def linear_cross_entropy_and_grad(input, linear_weight, target, *, linear_bias, weight,
                                  reduction, ignore_index, label_smoothing, options):
    """``(loss, grad_input, grad_weight, grad_bias)`` by row blocks (see the module
    docstring), or ``NotImplemented``."""
    problem = _problem(input, linear_weight, target, linear_bias, weight)
    if problem is None:
        return NotImplemented
    x, w, b, t, class_weight = problem
    _, _, _, w_y = cross_entropy_targets(t, class_weight, w.shape[0], ignore_index)
    total_weight = float(np.sum(w_y, dtype=np.float64))
    losses, grad_input, grad_weight, grad_bias = linear_cross_entropy_grads(
        x, w, t, b, class_weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        options=options, scale=gradient_scale(total_weight, reduction))
    loss = _finish(losses, total_weight, reduction, x.dtype, input.ndim == 1)
    if grad_bias is not None:
        grad_bias = grad_bias.astype(x.dtype)
    return loss, grad_input.reshape(input.shape), grad_weight, grad_bias
