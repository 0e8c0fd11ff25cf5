"""float16 <-> float32 conversions for the NumPy engine, compiled by numba.

float16 arrays reach the compiled kernels converted to float32 (cross entropy by chunks
of samples, the elementwise losses whole), and their results go back to float16.
NumPy's casts between the two run one element at a time on CPUs without its float16
SIMD loops, and the float32 -> float16 cast takes about 70 ns an element where the
result is subnormal, as a mean's gradient mostly is (1/(N C) is below float16's
smallest normal 6.1e-5 from N C = 16384 on): 550 ms for 2048 x 4096, 25x the float32
cross-entropy pass. These loops convert on the bit patterns, with selects in place of
branches, so that LLVM vectorises them on any CPU: the method of F. Giesen's "half <->
float" conversions (2012; the float16 exponent re-biased by an integer add, the
subnormals rounded by a float add of a power of two), rounding to nearest even as NumPy
and IEEE 754 do. ``tests/test_half.py`` checks them against NumPy's casts bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from anyloss._threads import get_threads
from anyloss.backends.numpy.compiled.elementary import bits_to_float32, float32_bits
from anyloss.backends.numpy.compiled.parallel import parallel_kernel

__all__ = ["halves_to_singles", "singles_to_halves", "to_float32", "to_float16"]

f32 = np.float32
#: Elements below which :func:`to_float32` and :func:`to_float16` convert on the calling
#: thread (a parallel launch costs some microseconds).
PARALLEL_MIN = 1 << 16


@numba.njit(inline="always")
def _single_of_half(h):
    """The float32 value of the float16 bit pattern ``h`` (a uint16), exactly."""
    o = (np.int32(h) & np.int32(0x7FFF)) << np.int32(13)  # exponent and mantissa, in place
    e = o & np.int32(0x0F800000)
    o = o + np.int32(0x38000000)  # exponent bias 15 -> 127
    inf_nan = o + np.int32(0x38000000)  # exponent 31 -> 255
    # Subnormal (and zero): 2^-14 (1 + m / 1024) - 2^-14 = m 2^-24, exactly.
    sub = float32_bits(bits_to_float32(np.int32(o + np.int32(0x00800000)))
                       - f32(6.103515625e-05))
    r = inf_nan if e == np.int32(0x0F800000) else (sub if e == np.int32(0) else o)
    return bits_to_float32(np.int32(r | ((np.int32(h) & np.int32(0x8000)) << np.int32(16))))


@numba.njit(inline="always")
def _half_of_single(v):
    """The float16 bit pattern (an int32 below 2^16) of the float32 ``v`` rounded to nearest
    even; inf beyond float16's range, a quiet nan for nan."""
    u = float32_bits(v)
    sign = (u >> np.int32(16)) & np.int32(0x8000)
    a = u & np.int32(0x7FFFFFFF)
    big = np.int32(0x7E00) if a > np.int32(0x7F800000) else np.int32(0x7C00)
    # Below 2^-14 (float16's subnormals): adding 0.5, whose ulp is float16's 2^-24, rounds
    # to a multiple of it; the low bits are then the float16 pattern.
    sub = float32_bits(bits_to_float32(a) + f32(0.5)) - np.int32(0x3F000000)
    # Normal: re-bias the exponent, round the 13 bits dropped to nearest even, shift.
    odd = (a >> np.int32(13)) & np.int32(1)
    normal = (a + np.int32(-0x38000000 + 0xFFF) + odd) >> np.int32(13)
    h = big if a >= np.int32(0x47800000) else (sub if a < np.int32(0x38800000) else normal)
    return np.int32(h | sign)


@parallel_kernel(cache=True, nogil=True)
def halves_to_singles(blocks, h, out):
    """``out`` (float32, ``(n,)``) = the float16 values whose bit patterns are ``h``
    (uint16, ``(n,)``), exactly, by ``blocks`` blocks."""
    n = h.shape[0]
    for b in prange(blocks):
        i0, i1 = b * n // blocks, (b + 1) * n // blocks
        hb, ob = h[i0:i1], out[i0:i1]  # slices: loops over computed bounds do not vectorise
        for i in range(hb.shape[0]):
            ob[i] = _single_of_half(hb[i])


@parallel_kernel(cache=True, nogil=True)
def singles_to_halves(blocks, x, out):
    """``out`` (uint16, ``(n,)``) = the float16 bit patterns of ``x`` (float32, ``(n,)``)
    rounded to nearest even, as NumPy's cast, by ``blocks`` blocks."""
    n = x.shape[0]
    for b in prange(blocks):
        i0, i1 = b * n // blocks, (b + 1) * n // blocks
        xb, ob = x[i0:i1], out[i0:i1]
        for i in range(xb.shape[0]):
            ob[i] = np.uint16(_half_of_single(xb[i]))


def _blocks(n: int) -> int:
    """One block below :data:`PARALLEL_MIN` elements, else four per thread."""
    return 1 if n < PARALLEL_MIN else max(1, min(n, 4 * get_threads()))


def _checked(out: np.ndarray, a: np.ndarray, dtype) -> np.ndarray:
    """``out``, if it can take the conversion of ``a`` in place (a flat view of it is
    written, so a copy would lose the result)."""
    if out.dtype != dtype or out.shape != a.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype).name} array of shape "
                         f"{a.shape}")
    return out


def to_float32(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The float16 array ``a``'s values (exact) in float32, of its shape (0-d included): in
    ``out`` (C-contiguous float32) where given, else in a new C-contiguous array."""
    a = a if a.flags.c_contiguous else a.copy(order="C")
    out = np.empty(a.shape, np.float32) if out is None else _checked(out, a, np.float32)
    blocks = _blocks(a.size)
    (halves_to_singles.serial if blocks == 1 else halves_to_singles)(
        blocks, a.reshape(-1).view(np.uint16), out.reshape(-1))
    return out


def to_float16(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The float32 array ``a`` rounded to nearest even in float16 (NumPy's
    ``a.astype(np.float16)``), of its shape (0-d included): in ``out`` (C-contiguous
    float16) where given, else in a new C-contiguous array."""
    a = a if a.dtype == np.float32 and a.flags.c_contiguous else a.astype(np.float32, order="C")
    out = np.empty(a.shape, np.float16) if out is None else _checked(out, a, np.float16)
    blocks = _blocks(a.size)
    (singles_to_halves.serial if blocks == 1 else singles_to_halves)(
        blocks, a.reshape(-1), out.reshape(-1).view(np.uint16))
    return out
