"""The cross-entropy row pass, compiled by numba: one kernel per row (or column block).

Shapes. The row kernels take ``x`` ``(N, C)`` C-contiguous, float32 or float64,
and write per row ``peak`` (the row maximum, ``x``'s dtype), ``total =
sum_c exp(x_c - peak)`` and ``smooth = sum_c w_c (x_c - peak)`` (float64; ``w_c
= 1`` for ``kind == 1``, nothing for ``kind == 0``) and ``bad`` (uint8: 1 where
the row holds a nan, or its maximum is not finite). The column kernels take a
K-dimensional input as ``x3`` ``(N, C, D)`` C-contiguous (class axis of stride
``D``) and write the same quantities ``(N, D)``, per (sample, position).

The gradient kernels also write, into ``g`` (``x``'s shape and dtype),

    g_c = exp(x_c - peak) * factor / total - spread * w_c - [c == t] * hit,

the gradient of ``coef * loss`` with ``factor = coef ((1 - eps) w_t + eps/C
sum w)``, ``spread = coef eps / C`` and ``hit = coef (1 - eps) w_t`` given per
row by the caller. A row's exponentials are written into ``g`` on the first pass
and rescaled in place on a second one while the row is in cache, so ``g`` goes
to memory once.

Per row, one read of ``x`` from memory: the maximum (a 256-lane reduction that
LLVM vectorises, nan winning every comparison, so that the maximum is nan when
the row holds one), then, from cache, the exponentials and sums. A row
flagged ``bad`` is left to the caller (the NumPy arithmetic of
:mod:`anyloss.backends.numpy.cross_entropy`, which follows torch on inf and
nan). The exponential is a polynomial without libm calls, so the loops
vectorise: the single-precision Cephes ``expf`` (S. L. Moshier, *Methods and
Programs for Mathematical Functions*, 1989: reduction by ln 2 split in two, a
degree-6 polynomial, within 1 ulp) and, for float64, the same reduction with
the Cephes ``exp`` constants and the Taylor polynomial of degree 13 (truncation
below 5e-18 on ``|r| <= ln2/2``), both flushed to 0 below the smallest normal
result. Row sums accumulate in ``x``'s dtype over chunks of 2048 classes, added
in float64; the column kernels accumulate in float64. The order of every sum is
fixed by the shape alone, so the result does not depend on the thread count:
the kernels are :func:`.parallel.parallel_kernel` ``prange`` loops over rows
(or column blocks), one row to a thread.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

from anyloss.backends.numpy.compiled.elementary import exp_reduced32, exp_reduced64
from anyloss.backends.numpy.compiled.parallel import parallel_kernel

__all__ = ["forward_rows", "gradient_rows", "forward_columns", "gradient_columns"]

f32 = np.float32
f64 = np.float64
#: Fast-math flags of the kernels: reassociation (vectorised sums) but no ``nnan``/``ninf``,
#: so that the nan checks keep their meaning.
FLAGS = {"reassoc", "contract", "nsz", "arcp", "afn"}
#: Classes per float32 partial sum (added in float64).
CHUNK = 2048
#: Lanes of the vectorised row maximum.
LANES = 256


@intrinsic
def bits_to_float32(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def bits_to_float64(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits`` (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(inline="always", fastmath=FLAGS)
def exp_nonpositive32(x):
    """``exp(x)`` for float32 ``x <= 0``: Cephes ``expf``; 0 below -87 (nan for nan is not
    promised: callers check nan themselves)."""
    y = max(x, f32(-87.0))
    k = np.floor(y * f32(1.44269504088896341) + f32(0.5))  # float32 (math.floor: int64)
    r = y - k * f32(0.693359375) - k * f32(-2.12194440e-4)
    e = exp_reduced32(r) * bits_to_float32(np.int32(k + f32(127.0)) << 23)
    return e if x >= f32(-87.0) else f32(0.0)


@numba.njit(inline="always", fastmath=FLAGS)
def exp_nonpositive64(x):
    """``exp(x)`` for float64 ``x <= 0``: Cephes' reduction ``x = k ln2 + r`` (ln 2 as
    C1 + C2), the degree-13 Taylor polynomial of ``exp(r)``; 0 below -708."""
    y = max(x, -708.0)
    k = np.floor(y * 1.4426950408889634073599 + 0.5)
    r = y - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6
    e = exp_reduced64(r) * bits_to_float64(np.int64(k + 1023.0) << 52)
    return e if x >= -708.0 else 0.0


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0``, float32 or float64 by the argument's type (numba only)."""
    raise NotImplementedError("numba only")


@overload(exp_nonpositive, inline="always", jit_options={"fastmath": FLAGS})
def _exp_nonpositive(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: exp_nonpositive32(x)
    if isinstance(x, types.Float):
        return lambda x: exp_nonpositive64(x)
    return None


# The one line to switch to the shared elementary functions (.elementary.exp). Not done:
# inlined into these kernels, which need the ``reassoc`` flag for vectorised sums, its
# magic-number rounding ``(y + M) - M`` is folded away (sums 2.6% off, measured), and it
# was 1.1-1.26x slower here (it handles x > 0 and the subnormal range too).
exp = exp_nonpositive


@numba.njit(inline="always", fastmath=FLAGS)
def _row_max(row, acc):
    """``max(row)`` for a row without nan, by ``LANES`` running maxima (``acc`` scratch)."""
    n = row.shape[0]
    first = row[0]
    for j in range(LANES):
        acc[j] = first
    nb = n // LANES
    for b in range(nb):
        blk = row[b * LANES:(b + 1) * LANES]
        for j in range(LANES):
            v = blk[j]
            acc[j] = v if (v > acc[j] or v != v) else acc[j]
    m = acc[0]
    for j in range(LANES):
        m = acc[j] if (acc[j] > m or acc[j] != acc[j]) else m
    for c in range(nb * LANES, n):
        v = row[c]
        m = v if (v > m or v != v) else m
    return m


@numba.njit(inline="always", fastmath=FLAGS)
def _row_sums(row, m, w, kind, out, write):
    """``(sum exp(row - m), smooth sum)`` in float64 for a finite ``m``; with ``write``, also
    ``out = exp(row - m)``.

    Chunks are slices: loops over computed bounds (``range(c0, c1)``) do not vectorise.
    """
    n = row.shape[0]
    zero = m - m
    s64, t64 = 0.0, 0.0
    for c0 in range(0, n, CHUNK):
        v = row[c0:c0 + CHUNK]
        o = out[c0:c0 + CHUNK]
        s, t = zero, zero
        if kind == 2:
            wc = w[c0:c0 + CHUNK]
        for c in range(v.shape[0]):
            d = v[c] - m
            e = exp(d)
            if write:
                o[c] = e
            s += e
            if kind == 1:
                t += d
            elif kind == 2:
                t += wc[c] * d
        s64 += s
        t64 += t
    return s64, t64


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def forward_rows(x, w, kind, peak, total, smooth, bad):
    """Per row of ``x`` ``(N, C)``: ``peak``, ``total``, ``smooth``, ``bad`` (see the module)."""
    for i in prange(x.shape[0]):
        row = x[i]
        acc = np.empty(LANES, x.dtype)
        m = _row_max(row, acc)
        peak[i] = m
        if math.isfinite(m):
            s, t = _row_sums(row, m, w, kind, row, False)
            total[i] = s
            smooth[i] = t
            bad[i] = 0
        else:
            bad[i] = 1


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def gradient_rows(x, t, w, kind, factor, spread, hit, peak, total, smooth, bad, a, g):
    """:func:`forward_rows`, ``a = factor / total`` (``x``'s dtype) and the gradient row
    ``g[i]`` (see the module); rows flagged ``bad`` leave ``g[i]`` to the caller."""
    for i in prange(x.shape[0]):
        row, out = x[i], g[i]
        acc = np.empty(LANES, x.dtype)
        m = _row_max(row, acc)
        peak[i] = m
        bad[i] = 1
        if math.isfinite(m):
            bad[i] = 0
            s, sm = _row_sums(row, m, w, kind, out, True)
            total[i] = s
            smooth[i] = sm
            a[i] = factor[i] / s  # in a's dtype, x's
            scale = a[i]
            minus = spread[i]
            for c0 in range(0, out.shape[0], CHUNK):
                o = out[c0:c0 + CHUNK]
                if kind == 2:
                    wc = w[c0:c0 + CHUNK]
                    for c in range(o.shape[0]):
                        o[c] = o[c] * scale - minus * wc[c]
                else:
                    for c in range(o.shape[0]):
                        o[c] = o[c] * scale - minus
            out[t[i]] -= hit[i]


@numba.njit(inline="always", fastmath=FLAGS)
def _column_block(x3, n, j0, j1, w, kind, peak, total, smooth, bad, g, write):
    """Positions ``j0:j1`` of sample ``n``: the column analogue of the row pass, every loop
    running over the contiguous positions. Returns the float64 totals of the block."""
    c_count = x3.shape[1]
    width = j1 - j0
    m = x3[n, 0, j0:j1].copy()
    for c in range(1, c_count):
        v = x3[n, c, j0:j1]
        for j in range(width):
            m[j] = v[j] if (v[j] > m[j] or v[j] != v[j]) else m[j]
    s = np.zeros(width, np.float64)
    sm = np.zeros(width, np.float64)
    # One loop per case: branches inside the position loop keep it from vectorising. The
    # float32 exponentials go through ``e`` (x's dtype) before the float64 sums.
    e = np.empty(width, x3.dtype)
    for c in range(c_count):
        v = x3[n, c, j0:j1]
        o = g[n, c, j0:j1] if write else e
        for j in range(v.shape[0]):
            o[j] = exp(v[j] - m[j])
        for j in range(o.shape[0]):
            s[j] += o[j]
        if kind != 0:
            wc = w[c] if kind == 2 else w[0]
            for j in range(v.shape[0]):
                sm[j] += wc * (v[j] - m[j])
    for j in range(width):
        peak[n, j0 + j] = m[j]
        total[n, j0 + j] = s[j]
        smooth[n, j0 + j] = sm[j]
        bad[n, j0 + j] = 0 if math.isfinite(m[j]) else 1
    return s


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def forward_columns(x3, w, kind, width, peak, total, smooth, bad):
    """Per (sample, position) of ``x3`` ``(N, C, D)``: ``peak``, ``total``, ``smooth``, ``bad``
    ``(N, D)``, by blocks of ``width`` positions."""
    n_count, d_count = x3.shape[0], x3.shape[2]
    per = (d_count + width - 1) // width
    for b in prange(n_count * per):
        n, j0 = b // per, (b % per) * width
        j1 = min(j0 + width, d_count)
        _column_block(x3, n, j0, j1, w, kind, peak, total, smooth, bad, x3, False)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def gradient_columns(x3, t2, w, kind, width, factor, spread, hit, peak, total, smooth, bad, g):
    """:func:`forward_columns` and the gradient ``g`` ``(N, C, D)``; positions flagged ``bad``
    are left to the caller."""
    n_count, c_count, d_count = x3.shape
    per = (d_count + width - 1) // width
    for b in prange(n_count * per):
        n, j0 = b // per, (b % per) * width
        j1 = min(j0 + width, d_count)
        s = _column_block(x3, n, j0, j1, w, kind, peak, total, smooth, bad, g, True)
        nw = j1 - j0
        scale = np.empty(nw, g.dtype)
        for j in range(nw):
            scale[j] = factor[n, j0 + j] / s[j]
        minus = spread[n, j0:j1]
        for c in range(c_count):
            o = g[n, c, j0:j1]
            wc = w[c] if kind == 2 else w[0]
            for j in range(nw):
                o[j] = o[j] * scale[j] - minus[j] * wc
        for j in range(nw):
            if bad[n, j0 + j] == 0:
                g[n, t2[n, j0 + j], j0 + j] -= hit[n, j0 + j]
