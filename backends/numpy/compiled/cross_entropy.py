"""The cross-entropy row loop, compiled by numba (float32 rows): subtract, exp and sum at once.

NumPy's blocked pass (:mod:`anyloss.backends.numpy.cross_entropy`) makes four
sweeps over each cached block (subtract, exp, sum, and the smoothing sum). Here
the row maximum still comes from NumPy (its reduction is vectorised; numba's is
not), and one compiled loop does the rest with a polynomial exp that the
compiler vectorises: the single-precision Cephes ``expf`` (S. L. Moshier,
*Methods and Programs for Mathematical Functions*, 1989), range reduction by
ln 2 and a degree-6 polynomial, within 1 ulp over [-87, 0]. Sums run in float32
over chunks of 2048 classes, added in float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

f32 = np.float32


@intrinsic
def bits_to_float32(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", fastmath=True)
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


@numba.njit(nogil=True, fastmath=True, cache=True)
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


@numba.njit(nogil=True, fastmath=True, cache=True)
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
