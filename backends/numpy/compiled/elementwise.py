"""One-pass kernels of the elementwise losses, compiled by numba.

Each kernel reads its operands once, computes the loss of every element in the
input's dtype with torch's formula (and anyloss's written-once rounding where the
two agree; the differences are noted per kernel), and either writes it to ``out``
(``unreduced``) or adds it up. No array of the problem's size is allocated.

Layout and reduction
--------------------
The operands are flat (``ravel``) C-contiguous arrays of ``n`` elements, cut into
tiles of :data:`TILE` elements (whole rows of :data:`TILE` elements or more for the
row losses, ``multilabel_soft_margin`` and ``cosine_embedding``). Tiles are
independent: a ``prange`` over them spreads them over :func:`anyloss.get_threads`
threads (:mod:`.parallel`). A tile's losses are computed into a tile buffer in the
input's dtype (a loop LLVM vectorises, the elementary functions being branch-free)
and summed in float64 (:func:`_sum64`, vectorised); each tile's sum goes to
``partials[tile]``, and the caller adds the partial sums (NumPy's ``sum``, whose order
depends on their number only). The tiling is
fixed by the shape alone, so the result does not depend on the thread count.

Broadcast operands (``weight`` and ``pos_weight`` of the binary cross entropies,
``var`` of the Gaussian NLL) are taken in one of four modes (:data:`FULL`: the
input's shape; :data:`COLUMN`: one value per position of the last axis;
:data:`ROW`: one value per row, the last axis broadcast; :data:`SCALAR`: one value),
read per *segment* (the part of a tile inside one row): a slice of the operand for
``FULL`` and ``COLUMN``, a tile buffer filled with the row's (or the only) value for
``ROW`` and ``SCALAR``, so that the inner loop reads contiguous memory in every mode.

Constants reach the kernels as scalars of the input's dtype (``half``, ``one``, ...):
a Python float literal would make numba compute a float32 kernel in float64.

The elementary functions are those of :mod:`.elementary` (vectorisable ``exp``,
``log``, ``log1p``, ``log1p(exp(-|x|))``, ``softplus``: no libm in the loops).

Sources of the formulas (PyTorch 2.13): ``aten/src/ATen/native/cpu/BinaryOpsKernel.cpp``
(``huber_kernel``, ``smooth_l1_kernel``); ``aten/src/ATen/native/Loss.cpp``
(``binary_cross_entropy_with_logits``, ``soft_margin_loss``, ``hinge_embedding_loss``,
``cosine_embedding_loss`` with ``EPSILON = 1e-12``, ``poisson_nll_loss``, ``kl_div``);
``aten/src/ATen/native/BinaryOps.cpp`` (``xlogy``); ``aten/src/ATen/native/Activation.cpp``
and its CPU kernel (``log_sigmoid``); the CPU kernel of ``binary_cross_entropy``
(``aten/src/ATen/native/Loss.cpp``, the clamp at -100); ``torch/nn/functional.py``
(``gaussian_nll_loss``, ``multilabel_soft_margin_loss``).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import prange

from anyloss.backends.numpy.compiled.elementary import (
    JIT_OPTIONS,
    exp,
    log,
    log1p,
    log1p_exp_neg_abs,
    softplus,
)
from anyloss.backends.numpy.compiled.parallel import parallel_kernel

__all__ = [
    "TILE", "FULL", "COLUMN", "ROW", "SCALAR", "n_tiles", "rows_per_tile",
    "huber", "smooth_l1", "soft_margin", "hinge_embedding", "kl_div", "poisson_nll",
    "gaussian_nll", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "multilabel_soft_margin", "cosine_embedding",
]

#: Elements per tile: the unit of work of a thread and of the float64 partial sums.
TILE = 16384

#: Modes of a broadcast operand (see the module docstring).
FULL, COLUMN, ROW, SCALAR = 0, 1, 2, 3


def n_tiles(n: int) -> int:
    """The number of tiles of ``n`` elements (the length of ``partials``)."""
    return -(-n // TILE)


_inline = numba.njit(inline="always", **JIT_OPTIONS)


@numba.njit(cache=True)
def rows_per_tile(row_length):
    """Rows per tile of the row losses: at least one, some :data:`TILE` elements (callable
    from Python and from the kernels)."""
    return max(1, TILE // max(1, row_length))


#: The flags of the two sums: reassociation lets LLVM keep several float64 partial sums in
#: SIMD registers (a single running sum would be one long dependency chain). Only these
#: two functions, compiled on their own (not inlined at numba's level), have it: the
#: elementary functions must not be reassociated. The order of the additions is fixed
#: by the compiled code, so it is the same in the serial and the parallel kernels.
_SUM_OPTIONS: dict[str, Any] = {"fastmath": {"reassoc", "contract"}, "error_model": "numpy",
                                "cache": True}


@numba.njit(**_SUM_OPTIONS)
def _sum64(a):
    """The sum of a 1-d array in float64."""
    total = 0.0
    for i in range(a.shape[0]):
        total += np.float64(a[i])
    return total


@numba.njit(**_SUM_OPTIONS)
def _dot64(a, b):
    """``sum(a * b)`` of two 1-d arrays, products and sums in float64."""
    total = 0.0
    for i in range(a.shape[0]):
        total += np.float64(a[i]) * np.float64(b[i])
    return total


@_inline
def _tile_buffer(out, start, stop, unreduced, like):
    """Where a tile's losses go: its slice of ``out``, or a fresh tile buffer."""
    if unreduced:
        return out[start:stop]
    return np.empty(stop - start, dtype=like.dtype)


@_inline
def _segment(a, mode, k, row, column, length, scratch):
    """The ``length`` values of broadcast operand ``a`` (mode ``mode``) for the flat
    elements ``k .. k + length`` (row ``row``, columns from ``column``), contiguous."""
    if mode == FULL:
        return a[k:k + length]
    if mode == COLUMN:
        return a[column:column + length]
    value = a[row] if mode == ROW else a[0]
    for t in range(length):
        scratch[t] = value
    return scratch[:length]


# --- regression ---------------------------------------------------------------------------------


@parallel_kernel(cache=True, **JIT_OPTIONS)
def huber(x, y, delta, half, out, partials, unreduced):
    """Huber loss, torch's ``huber_kernel``: ``z = |x - y|``,
    ``z < delta ? half z z : delta (z - half delta)``."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        for t in range(stop - start):
            z = abs(xs[t] - ys[t])
            dst[t] = half * z * z if z < delta else delta * (z - half * delta)
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def smooth_l1(x, y, beta, half, out, partials, unreduced):
    """Smooth L1 loss, torch's ``smooth_l1_kernel``: ``z = |x - y|``,
    ``z < beta ? half z z / beta : z - half beta`` (``beta = 0``: ``z``, the L1 loss)."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        for t in range(stop - start):
            z = abs(xs[t] - ys[t])
            dst[t] = half * z * z / beta if z < beta else z - half * beta
        if not unreduced:
            partials[b] = _sum64(dst)


# --- margin -------------------------------------------------------------------------------------


@parallel_kernel(cache=True, **JIT_OPTIONS)
def soft_margin(x, y, out, partials, unreduced):
    """Soft margin loss ``softplus(-y x) = max(-y x, 0) + log1p(exp(-|y x|))``: torch's
    ``log1p(exp(-x y))`` in value, finite where ``exp`` overflows (anyloss's formula)."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        for t in range(stop - start):
            dst[t] = softplus(-(ys[t] * xs[t]))
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def hinge_embedding(x, y, margin, zero, out, partials, unreduced):
    """Hinge embedding loss, torch's ``where(y != 1, clamp_min(margin - x, 0), 0)
    + where(y != -1, x, 0)`` (nan stays nan in the clamp)."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        for t in range(stop - start):
            xv, yv = xs[t], ys[t]
            hinge = margin - xv
            hinge = zero if hinge < zero else hinge
            dst[t] = (hinge if yv != 1 else zero) + (xv if yv != -1 else zero)
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def multilabel_soft_margin(x, y, w, zero, one, out, partials, unreduced):
    """Multilabel soft margin loss of ``(R, C)`` logits ``x`` and targets ``y``, class
    weights ``w`` (C,) (ones without a weight): row ``r`` is
    ``-sum_c w_c [y log_sigmoid(x) + (1 - y) log_sigmoid(-x)] / C``, with torch's
    ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))``; the row sums in float64.
    ``out`` (R,) gets the rows' losses when ``unreduced``; ``partials`` the float64 sums of
    the rows' losses per tile of :func:`rows_per_tile` rows."""
    r, c = x.shape
    per_tile = rows_per_tile(c)
    for b in prange(partials.shape[0]):
        first = b * per_tile
        last = min(first + per_tile, r)
        terms = np.empty(c, dtype=x.dtype)
        tile_total = 0.0
        for i in range(first, last):
            xs, ys = x[i], y[i]
            for t in range(c):
                xv, yv = xs[t], ys[t]
                tail = log1p_exp_neg_abs(xv)
                positive = (xv if xv < zero else zero) - tail
                negative = (-xv if -xv < zero else zero) - tail
                terms[t] = (yv * positive + (one - yv) * negative) * w[t]
            row = -_sum64(terms) / c
            if unreduced:
                out[i] = row
            tile_total += row
        partials[b] = tile_total


# --- probabilistic ------------------------------------------------------------------------------


@parallel_kernel(cache=True, **JIT_OPTIONS)
def kl_div(x, y, log_target, zero, out, partials, unreduced):
    """Pointwise KL divergence, torch's formulas: ``exp(y) (y - x)`` (``log_target``), else
    ``xlogy(y, y) - y x`` with ``xlogy(y, y) = 0`` at ``y = 0``."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        if log_target:
            for t in range(stop - start):
                dst[t] = exp(ys[t]) * (ys[t] - xs[t])
        else:
            for t in range(stop - start):
                yv = ys[t]
                entropy = yv * log(yv)
                dst[t] = (zero if yv == 0 else entropy) - yv * xs[t]
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def poisson_nll(x, y, log_input, full, eps, zero, one, half, two_pi, out, partials, unreduced):
    """Poisson NLL, torch's ``poisson_nll_loss``: ``exp(x) - y x`` (``log_input``) or
    ``x - y log(x + eps)``; with ``full``, plus Stirling's
    ``y log y - y + half log(two_pi y)`` where ``y > 1`` (``+ 0`` elsewhere)."""
    n = x.shape[0]
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        xs, ys = x[start:stop], y[start:stop]
        dst = _tile_buffer(out, start, stop, unreduced, x)
        if log_input:
            for t in range(stop - start):
                dst[t] = exp(xs[t]) - ys[t] * xs[t]
        else:
            for t in range(stop - start):
                dst[t] = xs[t] - ys[t] * log(xs[t] + eps)
        if full:
            for t in range(stop - start):
                yv = ys[t]
                counted = yv > one
                safe = yv if counted else one
                stirling = safe * log(safe) - safe + half * log(two_pi * safe)
                dst[t] = dst[t] + (stirling if counted else zero)
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def gaussian_nll(x, y, v, v_mode, row_length, log_scalar, eps, half, constant, out, partials,
                 negative, unreduced):
    """Gaussian NLL, torch's ``0.5 (log(v) + (x - y)^2 / v) [+ 0.5 log(2 pi)]`` with
    ``v = max(var, eps)`` (nan stays nan). ``v`` in mode ``v_mode``; for
    :data:`SCALAR` it is already clamped and ``log_scalar`` is its logarithm (anyloss's
    float ``var``: ``math.log`` in float64, rounded). ``constant`` is ``0.5 log(2 pi)``
    or 0 (added only when not 0). ``negative[tile]`` is set where a ``var`` entry is
    below 0 (the caller then declines)."""
    n = x.shape[0]
    add_constant = constant != 0
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        dst = _tile_buffer(out, start, stop, unreduced, x)
        scratch = np.empty(stop - start, dtype=x.dtype)
        k = start
        below = 0
        while k < stop:
            row = k // row_length
            column = k - row * row_length
            length = min(row_length - column, stop - k)
            xs, ys = x[k:k + length], y[k:k + length]
            d = dst[k - start:k - start + length]
            if v_mode == SCALAR:
                vv = v[0]
                for t in range(length):
                    diff = xs[t] - ys[t]
                    d[t] = half * (log_scalar + diff * diff / vv)
            else:
                vs = _segment(v, v_mode, k, row, column, length, scratch)
                for t in range(length):
                    raw = vs[t]
                    below += raw < 0
                    vv = eps if raw < eps else raw
                    diff = xs[t] - ys[t]
                    d[t] = half * (log(vv) + diff * diff / vv)
            if add_constant:
                for t in range(length):
                    d[t] = d[t] + constant
            k += length
        negative[b] = below > 0
        if not unreduced:
            partials[b] = _sum64(dst)


# --- binary classification ----------------------------------------------------------------------


@parallel_kernel(cache=True, **JIT_OPTIONS)
def binary_cross_entropy(x, y, w, w_mode, weighted, row_length, floor, one, out, partials,
                         outside):
    """Binary cross entropy, torch's CPU kernel:
    ``((y - 1) max(log1p(-x), floor) - y max(log(x), floor)) w`` (``floor = -100``).
    ``outside[tile]`` is set where an input or target lies outside ``[0, 1]`` or is nan
    (the caller then declines: anyloss raises). ``w`` in mode ``w_mode`` when
    ``weighted``; the losses go to ``out`` when it has ``n`` elements."""
    n = x.shape[0]
    unreduced = out.shape[0] == n
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        dst = _tile_buffer(out, start, stop, unreduced, x)
        scratch = np.empty(stop - start, dtype=x.dtype)
        bad = 0
        k = start
        while k < stop:
            row = k // row_length
            column = k - row * row_length
            length = min(row_length - column, stop - k)
            xs, ys = x[k:k + length], y[k:k + length]
            d = dst[k - start:k - start + length]
            for t in range(length):
                xv, yv = xs[t], ys[t]
                bad += not (xv >= 0 and xv <= 1 and yv >= 0 and yv <= 1)
                log_x = log(xv)
                log_1mx = log1p(-xv)
                log_x = floor if log_x < floor else log_x
                log_1mx = floor if log_1mx < floor else log_1mx
                d[t] = (yv - one) * log_1mx - yv * log_x
            if weighted:
                ws = _segment(w, w_mode, k, row, column, length, scratch)
                for t in range(length):
                    d[t] = d[t] * ws[t]
            k += length
        outside[b] = bad > 0
        if not unreduced:
            partials[b] = _sum64(dst)


@parallel_kernel(cache=True, **JIT_OPTIONS)
def binary_cross_entropy_with_logits(x, y, w, w_mode, weighted, p, p_mode, positive_weighted,
                                     row_length, zero, one, out, partials):
    """Binary cross entropy with logits, torch's CPU formula:
    ``((1 - y) x - log_sigmoid(x) (1 + (p - 1) y)) w`` with
    ``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` (the ``p`` factor only with
    ``positive_weighted``, ``w`` only with ``weighted``). The losses go to ``out`` when it
    has ``n`` elements."""
    n = x.shape[0]
    unreduced = out.shape[0] == n
    for b in prange(partials.shape[0]):
        start = b * TILE
        stop = min(start + TILE, n)
        dst = _tile_buffer(out, start, stop, unreduced, x)
        scratch = np.empty(stop - start, dtype=x.dtype)
        k = start
        while k < stop:
            row = k // row_length
            column = k - row * row_length
            length = min(row_length - column, stop - k)
            xs, ys = x[k:k + length], y[k:k + length]
            d = dst[k - start:k - start + length]
            if positive_weighted:
                ps = _segment(p, p_mode, k, row, column, length, scratch)
                for t in range(length):
                    xv, yv = xs[t], ys[t]
                    log_sigmoid = (xv if xv < zero else zero) - log1p_exp_neg_abs(xv)
                    d[t] = (one - yv) * xv - log_sigmoid * ((ps[t] - one) * yv + one)
            else:
                for t in range(length):
                    xv, yv = xs[t], ys[t]
                    log_sigmoid = (xv if xv < zero else zero) - log1p_exp_neg_abs(xv)
                    d[t] = (one - yv) * xv - log_sigmoid
            if weighted:
                ws = _segment(w, w_mode, k, row, column, length, scratch)
                for t in range(length):
                    d[t] = d[t] * ws[t]
            k += length
        if not unreduced:
            partials[b] = _sum64(dst)


# --- embedding ----------------------------------------------------------------------------------


@parallel_kernel(cache=True, **JIT_OPTIONS)
def cosine_embedding(x1, x2, y, margin, epsilon, zero, one, out, partials, unreduced):
    """Cosine embedding loss of ``(N, D)`` pairs and ``(N,)`` targets, torch's formula:
    ``cos = x1.x2 / sqrt((|x1|^2 + eps) (|x2|^2 + eps))``, loss ``1 - cos`` where
    ``y == 1``, ``max(cos - margin, 0)`` where ``y == -1``, 0 elsewhere. The three sums
    over ``D`` in float64, rounded to the input's dtype; the rest in the input's dtype
    as torch's tensor operations round it. ``partials`` per tile of
    :func:`rows_per_tile` rows."""
    r, dim = x1.shape
    per_tile = rows_per_tile(dim)
    for b in prange(partials.shape[0]):
        first = b * per_tile
        last = min(first + per_tile, r)
        tile_total = 0.0
        for i in range(first, last):
            a, c = x1[i], x2[i]
            dot = x1.dtype.type(_dot64(a, c))
            squared1 = x1.dtype.type(_dot64(a, a)) + epsilon
            squared2 = x1.dtype.type(_dot64(c, c)) + epsilon
            cos = dot / np.sqrt(squared1 * squared2)
            dissimilar = cos - margin
            dissimilar = zero if dissimilar < zero else dissimilar
            yv = y[i]
            loss = (one - cos if yv == 1 else zero) + (dissimilar if yv == -1 else zero)
            if unreduced:
                out[i] = loss
            tile_total += loss
        partials[b] = tile_total
