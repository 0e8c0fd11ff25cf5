"""The cross-entropy row pass, compiled by numba: one kernel per row (or column block).

Shapes. The row kernels take ``x`` ``(N, C)`` C-contiguous, float32 or float64,
and write per row ``peak`` (a shift, ``x``'s dtype: a value of the row at most its
maximum; the maximum for rows of fewer than :data:`LANES` classes), ``total =
sum_c exp(x_c - peak)`` (at least 1) and ``smooth = sum_c w_c (x_c - peak)`` (float64, with
``smoothing``: ``w`` then holds the ``C`` class weights, all 1 without a weight; not
written without) and ``bad`` (uint8: 1 where
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

Per row, one read of ``x`` from memory, overlapped with the arithmetic. Rows of at
least :data:`LANES` classes (of the forward, and of a gradient into an array of its own)
are summed in one pass, shifted by the maximum of their first :data:`LANES` values
(:func:`_shifted_rows`; a row too far below that shift, or holding nan or inf, is done
again with its maximum). The gradient written over the input runs each thread's rows
as a pipeline (:func:`_row_step`) instead: while the
exponentials of row i are computed from cache, the same loop takes the running
maxima of row i + 1 from memory (256 lanes that LLVM vectorises), and prefetches
that row's lines :data:`AHEAD_BYTES` ahead into the second-level cache (done in two
passes per row, a core's memory reads and its exponentials took turns, and the pass took
the time of both: 1.7x one read of the input, against 0.9-1.1x in float32 with the
pipeline). Rows of fewer than :data:`LANES` classes, for which that machinery costs more than
the row, are read twice each instead, by index (:func:`_short_row`). A nan is passed
over by the maximum and caught by the sum of the exponentials, which it leaves nan. A
row flagged ``bad`` (a nan, or a maximum that is not finite) is left to the caller (the
NumPy arithmetic of :mod:`anyloss.backends.numpy.cross_entropy`, which follows torch on
inf and nan). The exponential is a polynomial without libm calls, so the loops
vectorise: Cephes' reduction (S. L. Moshier, *Methods and Programs for
Mathematical Functions*, 1989: ``x = k ln 2 + r`` with ln 2 split in two), then
the polynomials of :mod:`.elementary` for ``exp(r)`` (Cephes' degree-6 ``expf``
polynomial in float32, a Chebyshev interpolant of degree 11 in float64; within 1.25
ulp in float32 and 1 in float64, tested). Values written (the gradient) are flushed to
0 below the smallest normal result. Terms only summed (the forward) keep that
smallest value instead, and take a cheaper form: a reduction whose extra error is below
1/64 (float32) or 1/13 (float64) of an ulp of a total that holds 1
(:func:`sum_term32`), and in float64 a polynomial of degree 10, within 3 ulp
(:func:`sum_term64`). Row sums
accumulate in ``x``'s dtype over chunks of 2048 classes, added in float64; the
class-index column kernels accumulate in float64. The order of every sum is fixed by the
shape alone, so the result does not depend on the thread count: the row kernels
are :func:`.parallel.parallel_kernel` ``prange`` loops over blocks of rows, the
column kernels over column blocks.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from anyloss._threads import get_threads
from anyloss.backends.numpy.compiled.elementary import (
    bits_to_float32,
    bits_to_float64,
    by_type,
    exp_horner32,
    exp_reduced32,
    exp_reduced64,
    exp_summed64,
    float32_bits,
    float64_bits,
    fma,
)
from anyloss.backends.numpy.compiled.memory import LINE_BYTES, prefetch_l2, row_window
from anyloss.backends.numpy.compiled.parallel import parallel_kernel

__all__ = ["row_blocks", "forward_rows", "gradient_rows", "forward_strided_rows",
           "gradient_strided_rows", "probability_rows", "row_coefficients", "row_losses",
           "forward_columns", "gradient_columns", "probability_columns"]

f32 = np.float32
f64 = np.float64
#: Fast-math flags of the kernels: reassociation (vectorised sums) but no ``nnan``/``ninf``,
#: so that the nan checks keep their meaning.
FLAGS = {"reassoc", "contract", "nsz", "arcp", "afn"}
#: Classes per float32 partial sum (added in float64).
CHUNK = 2048
#: Lanes of the vectorised row maximum, and the block of the row pipeline.
LANES = 256
#: Lanes that the row maximum's ``LANES`` lanes are folded into before the last, serial step.
FOLD = 16
#: Row blocks per thread of the row kernels. A block is one pipeline (the first row's
#: maximum is read before the pipeline starts); several per thread balance the threads.
BLOCKS_PER_THREAD = 4
#: How far ahead of its reading a line of the next row is prefetched (8 KiB: 8 float32 or
#: 4 float64 blocks of ``LANES``; the measurements are in benchmarks/README.md).
AHEAD_BYTES = 8192


# The exponentials (and the short rows' maximum step) are functions that LLVM inlines
# (``forceinline``); the rest of this module's helpers are inlined into numba's IR
# (``inline="always"``), which copies a callee's IR at each call site, its own callees
# inlined again in every copy. The exponentials sit at the bottom of every helper chain:
# inlined by LLVM, they are typed and compiled once per dtype, and the first compile of
# ``forward_rows`` and ``gradient_rows`` (float64, serial) took 12.2 against 16.7 s, that
# of the four cross-entropy functions of ``anyloss compile`` 174 against 237 s (two cold
# processes side by side), at the same speed (2026-12-06). Inlined by LLVM too,
# ``_add_term`` made rows of 100 classes 1.2x slower, and the pipeline's functions the
# float32 serial pass 7% slower: they stay in numba's IR.


def _block_function(function):
    """Compile one of the row kernels' block functions (a block of rows, as one ``prange``
    iteration does it): once per signature, called, not copied into numba's IR. The serial
    and parallel copies of a kernel (:mod:`.parallel`) call the same compiled function.
    Inlined into the ``prange`` loops of both copies, the float64
    forward's and gradient's first compile (``anyloss compile cross_entropy
    cross_entropy_and_grad``, cold) took 362 s against 114 s before the shifted float64
    rows, which made two row loops of each kernel three; as block functions, 82 s
    (2026-12-06)."""
    return numba.njit(fastmath=FLAGS, nogil=True)(function)


@numba.njit(forceinline=True, fastmath=FLAGS)
def exp_written32(x):
    """``exp(x)`` for float32 ``x`` (within 1.25 ulp) up to 88.37, +inf above (where ``k``
    reaches 128; the true value overflows from 88.72), 0 below -87, nan for nan: Cephes'
    reduction ``x = k ln2 + r`` (ln 2 as C1 + C2, C1 exact in 10 bits, so that ``k C1`` is
    exact) and :func:`.elementary.exp_reduced32`. The power ``2^k`` is made from the bits
    of ``k + (1.5 2^23 + 127)``: their low 9 bits are ``k + 127`` (1 to 255 here, 255
    making +inf), which the shift into the exponent field keeps; no float-to-integer
    conversion, whose result for nan LLVM leaves undefined. Positive ``x`` are the rows
    shifted by a lower bound of their maximum (:func:`_shifted_rows`)."""
    y = f32(-87.0) if x < f32(-87.0) else x  # nan stays nan
    y = f32(89.0) if y > f32(89.0) else y
    k = np.floor(y * f32(1.44269504088896341) + f32(0.5))
    r = fma(k, f32(2.12194440e-4), fma(k, f32(-0.693359375), y))  # two parts, kept apart
    power = bits_to_float32(float32_bits(k + f32(12583039.0)) << 23)  # 1.5 2^23 + 127
    return f32(0.0) if x < f32(-87.0) else exp_reduced32(r) * power


@numba.njit(forceinline=True, fastmath=FLAGS)
def exp_written64(x):
    """``exp(x)`` for float64 ``x`` (within 1 ulp) up to 709.43, +inf above (where ``k``
    reaches 1024; the true value overflows from 709.78), 0 below -708, nan for nan: the
    reduction of :func:`exp_written32` and the degree-11 polynomial of
    :func:`.elementary.exp_reduced64`; ``2^k`` from the low 12 bits of ``k + (1.5 2^52 +
    1023)`` (``k + 1023`` is 1 to 2047 here, 2047 making +inf)."""
    y = -708.0 if x < -708.0 else x
    y = 710.0 if y > 710.0 else y
    k = np.floor(y * 1.4426950408889634073599 + 0.5)
    r = fma(k, -1.42860682030941723212e-6, fma(k, -6.93145751953125e-1, y))
    power = bits_to_float64(float64_bits(k + 6755399441056767.0) << 52)  # 1.5 2^52 + 1023
    return 0.0 if x < -708.0 else exp_reduced64(r) * power


@numba.njit(forceinline=True, fastmath=FLAGS)
def sum_term32(x):
    """``exp(x)`` for float32 ``x`` as a term of a sum that holds a term 1 (at a row's
    shift): ``exp(-87)`` (about 2^-125.5) below -87, +inf above 88.37 (as
    :func:`exp_written32`), nan for nan, 1 exactly at 0. C terms of at most ``exp(-87)`` add
    at most ``C 2^-125`` to a sum of at least 1, no bit of a float32 or float64 total for
    any C below 2^70.

    Three operations fewer than :func:`exp_written32` (0.31 -> 0.27 ns a value of the
    row pass, one thread, data in L2), with its accuracy where a term counts:

    - ``k = round(x / ln2)`` by the magic-number addition inside one fused multiply-add
      (an intrinsic, which the kernels' reassociation does not fold away as it folds
      ``(y + M) - M``), the integer ``k`` then in ``t``'s low bits, from which ``2^k`` is
      made; no ``floor``;
    - ``r = x - k ln2`` with ln 2 in one part. Its rounding error (1.9e-9) moves a term
      ``2^k exp(r)`` (at most ``2^(k + 1/2)``) by at most ``|k| 1.9e-9`` relative: nothing
      where ``k = 0``, and less than 2^-29, 1/64 of an ulp, of a sum holding 1 elsewhere
      for ``k < 0``; on the terms above 1 of a row shifted by ``a`` below its maximum ``m``,
      the logsumexp moves by at most ``(m - a) 2.8e-9``, a small part of the rounding of
      the differences ``x - a`` themselves;
    - ``exp(r)`` by the Chebyshev polynomial of :func:`.elementary.exp_horner32`.

    tests/test_cross_entropy_fast.py bounds the error of each term."""
    y = f32(-87.0) if x < f32(-87.0) else x  # nan stays nan
    y = f32(89.0) if y > f32(89.0) else y
    t = fma(y, f32(1.44269504088896341), f32(12582912.0))  # 1.5 2^23: k in t's low bits
    k = t - f32(12582912.0)
    r = fma(k, f32(-0.6931471805599453), y)
    power = bits_to_float32((float32_bits(t) + 127) << 23)  # the low 9 bits: k + 127
    return exp_horner32(r) * power


@numba.njit(forceinline=True, fastmath=FLAGS)
def sum_term64(x):
    """``exp(x)`` for float64 ``x`` as a term of a sum that holds a term 1: ``exp(-708)``
    below -708 (C such terms add at most ``C 2^-1021`` to a sum of at least 1), +inf above
    709.43 (as :func:`exp_written64`), nan for nan, and 1 exactly at 0.

    Two multiply-adds and the rounding instruction fewer than :func:`exp_written64`, where a
    term's error of a few ulps is one of the total:

    - the reduction of :func:`sum_term32`: ln 2 in one part, off by 2.3e-17, moves a term
      ``2^k exp(r)`` by ``|k| 2.3e-17`` relative: at most 1/13 of an ulp of a sum holding 1
      where ``k <= 0``; on the terms above 1 of a row shifted by ``a`` below its maximum
      ``m`` (:func:`_shifted_rows`), it moves the logsumexp by at most ``(m - a) 3.3e-17``,
      0.15 ulp of ``m - a``, the order of the rounding of the differences ``x - a``
      themselves (0.80 -> 0.65 ns a value of the float64 row pass, with the changes of that
      day to the row maxima);
    - ``exp(r)`` by the degree-10 polynomial of :func:`.elementary.exp_summed64` (within 3
      ulp; the float64 forward 1.21-1.35x -> 1.16x the read pass, 2026-12-06).

    tests/test_cross_entropy_fast.py bounds the error of each term."""
    y = -708.0 if x < -708.0 else x
    y = 710.0 if y > 710.0 else y
    t = fma(y, 1.4426950408889634073599, 6755399441055744.0)  # 1.5 2^52: k in t's low bits
    k = t - 6755399441055744.0
    r = fma(k, -0.6931471805599453, y)
    power = bits_to_float64((float64_bits(t) + 1023) << 52)  # the low 12 bits: k + 1023
    return exp_summed64(r) * power


def _sum_term32_of(x):
    return sum_term32(x)


def _sum_term64_of(x):
    return sum_term64(x)


def _exp_written32_of(x):
    return exp_written32(x)


def _exp_written64_of(x):
    return exp_written64(x)


_ELEMENTWISE = {"owner": "cross_entropy", "jit_options": {"fastmath": FLAGS}}
sum_term = by_type("sum_term", _sum_term32_of, _sum_term64_of, **_ELEMENTWISE)
sum_term.__doc__ = """``exp(x)`` as a term of a sum holding 1, float32 or float64 by the
    argument's type (:func:`sum_term32`, :func:`sum_term64`; numba code only)."""
exp_written = by_type("exp_written", _exp_written32_of, _exp_written64_of,
                          **_ELEMENTWISE)
exp_written.__doc__ = """``exp(x)``, float32 or float64 by the argument's type
    (:func:`exp_written32`, :func:`exp_written64`; numba code only)."""


# The one line to switch to the shared elementary functions (.elementary.exp). Not done:
# it was 1.1-1.26x slower here (it handles x > 0 and the subnormal range too). When it was
# inlined into numba's IR, these kernels' ``reassoc`` flag (for vectorised sums) also
# folded its magic-number rounding ``(y + M) - M`` away (sums 2.6% off, measured); inlined
# by LLVM since 2026-12-06, it keeps its own flags.
exp = exp_written


@numba.njit(inline="always", fastmath=FLAGS)
def _lanes_start(row, acc):
    """Start ``LANES`` running maxima of ``row`` in ``acc[0]`` (each at ``row[0]``).

    ``acc`` ``(2, LANES)`` holds the maxima twice: each whole block is read from one row
    and written to the other (:func:`_lanes_take`), so that the store is a plain one. Read
    and written in one place, ``acc[j] = v if v > acc[j] else acc[j]`` compiles to a
    compare and a masked store (the lanes not taken are not written); from two places, to
    ``vmaxpd`` and a plain store: 0.126 against 0.085 ns a value alone, float64 in L2 on
    Zen 4 (presumably the masked stores' values reach the next block's loads late). The
    rows are chosen by index, not as views: each view of ``acc`` counts a reference, two
    atomic operations of numba's runtime per block.

    Rows shorter than ``LANES`` take :func:`_short_row` instead of the lanes."""
    first = row[0]
    for j in range(LANES):
        acc[0, j] = first


@numba.njit(inline="always", fastmath=FLAGS)
def _lanes_take(block, count, acc, source, target):
    """``acc[target, j] = max(acc[source, j], block[j])`` for the ``count`` values of
    ``block`` (a nan is passed over, unless a lane started at one: see :func:`_row_max`).
    ``count`` is :data:`LANES` for a whole block (a constant trip count; ``source`` and
    ``target`` the two rows of ``acc``) and less for a row's tail (``source`` is
    ``target``)."""
    for j in range(count):
        v = block[j]
        a = acc[source, j]
        acc[target, j] = v if v > a else a


@numba.njit(inline="always", fastmath=FLAGS)
def _lanes_current(row):
    """The row of ``acc`` that holds the running maxima once ``row``'s whole blocks are
    taken (they alternate, from ``acc[0]``)."""
    return (row.shape[0] // LANES) % 2


@numba.njit(inline="always", fastmath=FLAGS)
def _lanes_finish(row, acc):
    """The row's maximum from the running maxima of its whole blocks and its tail.

    The tail is taken into the first lanes (a nan passed over, as in :func:`_lanes_take`),
    then the lanes are folded in halves down to :data:`FOLD` and those into one, a nan
    lane winning. Each halving is a loop across lanes from one row of ``acc`` into the
    other, which vectorises; folded in place, the loops compiled to scalar code (about
    1200 instructions a row, seen with ``perf``), and one compare per lane in a chain
    cost about 1000 cycles a row."""
    here = _lanes_current(row)
    tail = row[row.shape[0] - row.shape[0] % LANES:]  # a slice: row[start + c] gathers
    _lanes_take(tail, tail.shape[0], acc, here, here)
    width = LANES // 2
    while width >= FOLD:
        there = 1 - here
        for j in range(width):
            a = acc[here, j]
            v = acc[here, j + width]
            acc[there, j] = v if (v > a or v != v) else a
        here = there
        width //= 2
    m = acc[here, 0]
    for j in range(1, FOLD):
        v = acc[here, j]
        m = v if (v > m or v != v) else m
    return m


@numba.njit(forceinline=True, fastmath=FLAGS)
def _max_step(v, m):
    """``v`` if ``v > m``, else ``m`` (a nan ``v`` passed over)."""
    return v if v > m else m


@numba.njit(inline="always", fastmath=FLAGS)
def _add_term(d, w, c, smoothing, write, s, t):
    """One class's term ``d = x_c - peak`` of the row sums: ``(e, s + e, t + smooth term)``
    with ``e = exp(d)`` by :func:`exp_written` where it is written (``write``), else by
    :func:`sum_term`; the smooth term is ``w[c] d`` with ``smoothing``, else nothing.
    Shared by the row pipeline (:func:`_exp_terms`) and the short rows
    (:func:`_short_terms`)."""
    e = exp(d) if write else sum_term(d)
    if smoothing:
        t += w[c] * d
    return e, s + e, t


@numba.njit(inline="always", fastmath=FLAGS)
def _short_max(x, i, n):
    """The maximum of ``x[i, :n]``, with the rule of :func:`_row_max` (a nan passed
    over unless it is ``x[i, 0]``): four running maxima in registers, each taking every
    fourth value, then folded, a nan winning (only ``x[i, 0]`` can have made one).

    One running maximum is a chain of compares at their latency (38% of the pass over rows
    of 100 float32 classes, ``perf``); the vectorised reduction of ``llvm.maxnum``, which
    LLVM accepts without the ``nnan`` flag, took three times as long as these four on such
    rows (48 against 15.5 ns a row: x86 has no vector instruction for it)."""
    m0 = m1 = m2 = m3 = x[i, 0]
    whole = n - n % 4
    for j in range(0, whole, 4):
        m0 = _max_step(x[i, j], m0)
        m1 = _max_step(x[i, j + 1], m1)
        m2 = _max_step(x[i, j + 2], m2)
        m3 = _max_step(x[i, j + 3], m3)
    for j in range(whole, n):
        m0 = _max_step(x[i, j], m0)
    m0 = m1 if (m1 > m0 or m1 != m1) else m0
    m2 = m3 if (m3 > m2 or m3 != m3) else m2
    return m2 if (m2 > m0 or m2 != m2) else m0


@numba.njit(inline="always", fastmath=FLAGS)
def _short_terms(x, i, m, w, smoothing, out, write):
    """``(sum exp(x[i] - m), smooth sum)`` of row ``i`` (with ``write``, also ``out[i] =
    exp(x[i] - m)``), as :func:`_row_step` has them: summed in ``x``'s dtype, returned in
    float64."""
    zero = m - m
    s, t = zero, zero
    for c in range(x.shape[1]):
        e, s, t = _add_term(x[i, c] - m, w, c, smoothing, write, s, t)
        if write:
            out[i, c] = e
    return 0.0 + s, 0.0 + t


@numba.njit(inline="always", fastmath=FLAGS)
def _short_row(x, i, w, smoothing, peak, total, smooth, bad, out, write):
    """Row ``i`` of an ``x`` of fewer than :data:`LANES` classes: ``peak``, ``total``,
    ``smooth`` and ``bad`` as the row pipeline writes them (with ``write``, the row's
    exponentials into ``out[i]`` too), the row read twice, the second time from the
    first-level cache, by index.

    For rows this short the pipeline's machinery cost more than the row: starting and
    folding its lanes, its prefetches, and the views of each row, each of which counts a
    reference (two atomic operations of numba's runtime: 15% of the pass over rows of 100
    float32 classes, ``perf``). Rows this short stream from memory in order, which the
    hardware prefetches without help.

    The sums have a copy for each value of ``smoothing`` (as :func:`_row_step` has), chosen
    per row. :func:`forward_rows` also keeps a copy of its row loop for each value, so that
    the choice is made once: per row, its serial pass over rows of 100 float32 classes took
    83 against 70 ns a row. The gradient's row loop has one copy: two made the first compile
    of :func:`gradient_rows`' eight signatures take 209 against 150 s, for 25 against 28 us
    a serial pass over 256 x 100 float32 (2026-12-06)."""
    m = _short_max(x, i, x.shape[1])
    peak[i] = m
    bad[i] = 1
    if math.isfinite(m):
        if smoothing:  # a constant where the caller's row loop has a copy for each value
            s, t = _short_terms(x, i, m, w, True, out, write)
        else:
            s, t = _short_terms(x, i, m, w, False, out, write)
        total[i] = s
        smooth[i] = t
        bad[i] = 0 if s == s else 1


@numba.njit(inline="always", fastmath=FLAGS)
def _short_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total, smooth, bad, a,
                    out):
    """Rows ``i0:i1`` of :func:`gradient_rows` for an ``x`` of fewer than :data:`LANES`
    classes, by :func:`_short_row` (and rows that :func:`_shifted_rows` gave back);
    ``out`` is ``g``, or ``x`` itself.

    The rescale is :func:`_gradient_finish`'s, by index: that function takes a row as a view,
    and a view per row costs two atomic operations of numba's runtime, a large part of
    a row this short (see :func:`_short_row`)."""
    for i in range(i0, i1):
        _short_row(x, i, w, smoothing, peak, total, smooth, bad, out, True)
        if bad[i] != 0:
            continue
        a[i] = factor[i] / total[i]  # in a's dtype, x's
        scale = a[i]
        minus = spread[i]
        if smoothing:
            for c in range(x.shape[1]):
                out[i, c] = out[i, c] * scale - minus * w[c]
        else:
            for c in range(x.shape[1]):
                out[i, c] = out[i, c] * scale - minus
        out[i, t[i]] -= hit[i]


@numba.njit(inline="always", fastmath=FLAGS)
def _row_max(row, acc):
    """``max(row)`` by ``LANES`` running maxima (``acc`` ``(2, LANES)`` scratch). A nan is
    passed over (one compare per value), except a nan ``row[0]``, which every lane starts
    from and keeps: the maximum is then nan. A row holding nan elsewhere is caught by its
    sum of exponentials, which :func:`sum_term` leaves nan."""
    _lanes_start(row, acc)
    for b in range(row.shape[0] // LANES):
        _lanes_take(row[b * LANES:(b + 1) * LANES], LANES, acc, b % 2, (b + 1) % 2)
    return _lanes_finish(row, acc)


@numba.njit(inline="always", fastmath=FLAGS)
def _exp_terms(v, count, m, w, smoothing, o, write, s, t, ahead, acc, source, take):
    """``(s + sum exp(v - m), t + smooth sum)`` over the ``count`` values ``v`` in ``x``'s
    dtype (with ``write``, also ``o = exp(v - m)``); ``w``: the weights of ``v``'s classes.
    With ``take``, the same loop takes ``ahead`` (as many values) into the running maxima,
    from row ``source`` of ``acc`` to the other as :func:`_lanes_take` does. A constant
    ``count`` (the pipeline's blocks of :data:`LANES`) lets LLVM vectorise without a
    remainder loop."""
    target = 1 - source
    for c in range(count):
        if take:
            a = ahead[c]
            p = acc[source, c]
            acc[target, c] = a if a > p else p
        e, s, t = _add_term(v[c] - m, w, c, smoothing, write, s, t)
        if write:
            o[c] = e
    return s, t


@numba.njit(inline="always", fastmath=FLAGS)
def _row_step(row, m, w, smoothing, out, write, ahead, acc, take):
    """One step of the row pipeline: ``(sum exp(row - m), smooth sum)`` in float64 for a
    finite ``m``, nan when the row holds a nan (with ``write``, also ``out = exp(row -
    m)`` by :func:`exp_written`; without, the terms are :func:`sum_term`'s), while the
    running maxima of the next row ``ahead`` are taken into ``acc`` ``(2, LANES)``, as
    :func:`_row_max` takes them (``_lanes_finish(ahead, acc)`` then gives its maximum), and
    its lines are prefetched :data:`AHEAD_BYTES` before they are read.

    Without ``take`` (a constant), no maxima are taken (``acc`` is not read: any 2-d array
    of ``x``'s dtype) and ``ahead`` is only prefetched: the one pass of the shifted
    rows (:func:`_shifted_rows`) passes the row itself, whose lines are then asked for
    :data:`AHEAD_BYTES` before they are read.

    ``row`` is in cache (its maximum was the previous step's); ``ahead`` comes from memory
    while the exponentials of ``row`` keep the core busy: both in one loop per block of
    ``LANES`` (two loops would not overlap them as well). Sums run in ``x``'s dtype over
    chunks of :data:`CHUNK` classes, added in float64. Blocks are slices: loops over
    computed bounds (``range(c0, c1)``) do not vectorise.
    """
    # A copy of the loops for each value of ``smoothing``, a constant in it: tested inside
    # the loop, it left a branch and a masked multiply-add per vector, and the serial copy
    # of the kernels (:mod:`.parallel`) did not vectorise that loop at all (label smoothing
    # on one thread took 219 against 7.4 ms at 1024 x 32000 float32, 2026-12-06). Without
    # a weight the caller passes ``w`` all ones: a copy for unweighted smoothing as well
    # made the first compile of the row kernels' eight signatures take 94.3 s against
    # 66.7 s with two copies.
    if smoothing:
        return _row_pipeline(row, m, w, True, out, write, ahead, acc, take)
    return _row_pipeline(row, m, w, False, out, write, ahead, acc, take)


@numba.njit(inline="always", fastmath=FLAGS)
def _row_pipeline(row, m, w, smoothing, out, write, ahead, acc, take):
    """:func:`_row_step` for ``smoothing``, a constant where it is inlined as one."""
    n = row.shape[0]
    whole = n // LANES
    lead = max(1, AHEAD_BYTES // (LANES * row.itemsize))  # blocks between prefetch and read
    line = max(1, LINE_BYTES // row.itemsize)
    per_chunk = CHUNK // LANES
    if take:
        _lanes_start(ahead, acc)
    zero = m - m
    s64, t64 = 0.0, 0.0
    s, t = zero, zero
    for b in range(whole):
        c0 = b * LANES
        # Past the end of ahead: the row after it, where rows are adjacent, so that a row's
        # first 8 KiB are asked for early too (rows of 4480 classes took 1.3x as long
        # without). A prefetch has no effect on memory and never faults, even past the
        # array's end; keeping the index within the rows by a branch cost 1.2-1.4x on rows of
        # 1000-1300 classes.
        p0 = c0 + lead * LANES
        for q in range(p0, p0 + LANES, line):
            prefetch_l2(ahead, q)
        u = ahead[c0:c0 + LANES]
        v = row[c0:c0 + LANES]
        o = out[c0:c0 + LANES]
        wc = w[c0:c0 + LANES] if smoothing else w
        s, t = _exp_terms(v, LANES, m, wc, smoothing, o, write, s, t, u, acc, b % 2, take)
        if (b + 1) % per_chunk == 0:
            s64 += s
            t64 += t
            s, t = zero, zero
    c0 = whole * LANES
    wc = w[c0:] if smoothing else w
    s, t = _exp_terms(row[c0:], n - c0, m, wc, smoothing, out[c0:], write, s, t, row, acc, 0,
                      False)
    return s64 + s, t64 + t


def row_blocks(n: int) -> int:
    """The ``blocks`` argument of the row kernels for ``n`` rows: :data:`BLOCKS_PER_THREAD`
    per thread of :func:`anyloss.get_threads`, at most ``n``, at least 1."""
    return max(1, min(n, BLOCKS_PER_THREAD * get_threads()))


# --- the rows of LANES classes or more: one shifted pass (the pipeline over the input) ---
#
# Rows are summed shifted by a lower bound of their maximum, in one pass
# (:func:`_shifted_rows`), not by their maximum, which the pipeline takes from the next row
# while it computes this row's exponentials (it reads each row twice, the second time from
# the second-level cache). A float64 exponential costs 2.3 times a float32 one (15 fused
# multiply-adds for 8 values, against 6.5), for twice the bytes, and that pass is bound by
# Zen 4's two multiply-add pipes: at 1024 x 32000 float64, the one pass took 0.92-0.93x the
# pipeline's time (five runs). In float32, bound by memory, the second read counts
# (presumably more where a row of the input and one of the gradient fill the 1 MB
# second-level cache, as at 1024 x 128256): the one pass took 0.82-0.99x the pipeline's
# time for the forward and 0.78-0.98x for the gradient at 1024 x 128256, 4096 x 32000,
# 4096 x 4000 and 256 x 1000 (the kernels side by side, 2026-12-06). The gradient written
# over the input keeps the pipeline: a row given back (below) could not be read again.

#: The largest ``total`` that a shifted row (:func:`_shifted_rows`) is taken with, per
#: dtype: a shift within about 354 (float64) or 44 (float32) of the row's maximum. Above it
#: (or where a term overflows), the row is done again with its maximum, so that ``factor /
#: total`` stays a normal number, and float32's chunk sums stay far from overflow.
SHIFTED_TOTAL_LIMIT = {"float64": 2.0 ** 512, "float32": 2.0 ** 64}
_LIMIT64 = SHIFTED_TOTAL_LIMIT["float64"]
_LIMIT32 = SHIFTED_TOTAL_LIMIT["float32"]


@numba.njit(inline="always", fastmath=FLAGS)
def _shifted_rows(x, i, w, smoothing, out, write):
    """``(a, sum exp(x[i] - a), smooth sum)`` of a row ``i`` of at least :data:`LANES`
    classes, in one pass, with ``a`` the maximum of its first :data:`LANES` values (a lower
    bound of its maximum, so that the largest term is at least 1), or ``total`` nan where
    the row must be done again with its maximum: ``a`` not finite, a nan in the row, or a
    total above :data:`SHIFTED_TOTAL_LIMIT` (terms reaching ``exp(709.43)`` in float64,
    ``exp(88.38)`` in float32, are +inf). With ``write``, also ``out = exp(x[i] - a)``.

    The row's lines are prefetched :data:`AHEAD_BYTES` ahead of the exponentials that read
    them (:func:`_row_step` without ``take``)."""
    limit = _LIMIT64 if x.itemsize == 8 else _LIMIT32
    a = _short_max(x, i, LANES)
    if not math.isfinite(a):
        return a, np.nan, np.nan
    row = x[i]
    s, t = _row_step(row, a, w, smoothing, out, write, row, x, False)  # x: see take
    return a, (s if s <= limit else np.nan), t  # nan is not <=


@_block_function
def _shifted_forward(x, i0, i1, w, smoothing, peak, total, smooth, bad):
    """Rows ``i0:i1`` of :func:`forward_rows` by :func:`_shifted_rows`; a row it gives back
    is done again by :func:`_short_row`, with its maximum (and flagged there, for a nan or
    a maximum that is not finite)."""
    for i in range(i0, i1):
        a, s, t = _shifted_rows(x, i, w, smoothing, x[i], False)
        if s == s:
            peak[i] = a
            total[i] = s
            smooth[i] = t
            bad[i] = 0
        else:
            _short_row(x, i, w, smoothing, peak, total, smooth, bad, x, False)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def forward_rows(blocks, x, w, smoothing, peak, total, smooth, bad):
    """Per row of ``x`` ``(N, C)``: ``peak``, ``total``, ``smooth``, ``bad`` (see the module),
    by ``blocks`` blocks of consecutive rows, each row by the one shifted pass of
    :func:`_shifted_rows` (rows of fewer than :data:`LANES` classes by
    :func:`_short_row`)."""
    n = x.shape[0]
    for b in prange(blocks):
        i0, i1 = b * n // blocks, (b + 1) * n // blocks
        if x.shape[1] >= LANES:
            _shifted_forward(x, i0, i1, w, smoothing, peak, total, smooth, bad)
        elif smoothing:  # a copy for each value (see _short_row)
            for i in range(i0, i1):
                _short_row(x, i, w, True, peak, total, smooth, bad, x, False)
        else:
            for i in range(i0, i1):
                _short_row(x, i, w, False, peak, total, smooth, bad, x, False)


@numba.njit(inline="always", fastmath=FLAGS)
def _gradient_finish(out, i, s, t, w, smoothing, factor, spread, hit, a):
    """Row ``i`` of the gradient from its exponentials ``out`` (rescaled in place, by
    chunks of :data:`CHUNK` while they are in cache) and their sum ``s``: ``a[i] =
    factor[i] / s``, ``out = out a[i] - spread[i] w``, ``hit[i]`` off the target ``t[i]``."""
    a[i] = factor[i] / s  # in a's dtype, x's
    scale = a[i]
    minus = spread[i]
    for c0 in range(0, out.shape[0], CHUNK):
        o = out[c0:c0 + CHUNK]
        if smoothing:
            wc = w[c0:c0 + CHUNK]
            for c in range(o.shape[0]):
                o[c] = o[c] * scale - minus * wc[c]
        else:
            for c in range(o.shape[0]):
                o[c] = o[c] * scale - minus
    out[t[i]] -= hit[i]


@_block_function
def _pipelined_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total, smooth,
                        bad, a):
    """Rows ``i0:i1`` of :func:`gradient_rows` over the input ``x`` itself, by the row
    pipeline (the loops read and write a row at the same index)."""
    acc = np.empty((2, LANES), x.dtype)
    m = _row_max(x[i0], acc)
    for i in range(i0, i1):
        row, ahead = x[i], x[min(i + 1, i1 - 1)]
        out = row
        peak[i] = m
        bad[i] = 1
        if not math.isfinite(m):
            m = _row_max(ahead, acc)
            continue
        s, sm = _row_step(row, m, w, smoothing, out, True, ahead, acc, True)
        m = _lanes_finish(ahead, acc)
        total[i] = s
        smooth[i] = sm
        if s != s:  # a nan in the row
            continue
        bad[i] = 0
        _gradient_finish(out, i, s, t, w, smoothing, factor, spread, hit, a)


@_block_function
def _shifted_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total, smooth,
                      bad, a, g):
    """Rows ``i0:i1`` of :func:`gradient_rows` into ``g`` by :func:`_shifted_rows`; a row it
    gives back is done again by :func:`_short_gradient`, with its maximum."""
    for i in range(i0, i1):
        out = g[i]
        m, s, sm = _shifted_rows(x, i, w, smoothing, out, True)
        if s == s:
            peak[i] = m
            total[i] = s
            smooth[i] = sm
            bad[i] = 0
            _gradient_finish(out, i, s, t, w, smoothing, factor, spread, hit, a)
        else:
            _short_gradient(x, i, i + 1, t, w, smoothing, factor, spread, hit, peak, total,
                            smooth, bad, a, g)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def gradient_rows(blocks, x, t, w, smoothing, factor, spread, hit, peak, total, smooth, bad, a, g):
    """:func:`forward_rows`, ``a = factor / total`` (``x``'s dtype) and the gradient row
    ``g[i]`` (see the module); rows flagged ``bad`` leave ``g[i]`` to the caller.

    ``g=None`` writes the gradient over ``x`` itself, each row once its sums are taken (a
    row flagged for a nan may be part written: it keeps a nan, which the caller's redo
    turns into nan everywhere, as for the row it was; rows flagged for a maximum that is
    not finite are not written)."""
    n = x.shape[0]
    for b in prange(blocks):
        i0, i1 = b * n // blocks, (b + 1) * n // blocks
        short = x.shape[1] < LANES
        if g is None and short:
            _short_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total,
                            smooth, bad, a, x)
        elif g is None:  # over the input: the pipeline in either dtype
            _pipelined_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total,
                                smooth, bad, a)
        elif short:
            _short_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total,
                            smooth, bad, a, g)
        else:
            _shifted_gradient(x, i0, i1, t, w, smoothing, factor, spread, hit, peak, total,
                              smooth, bad, a, g)


# --- rows that lie apart: ``a[:, :C]`` of a wider ``a`` (unit column stride) ---
#
# Such an input (a vocabulary padded to a multiple of 64 and sliced back, say) is taken a
# row at a time, each row ``i`` as row ``i`` of a C-contiguous window of its own
# (:func:`.memory.row_window`, no copy), so that the per-row results stay at index ``i`` of
# their arrays (a view per row of each, ``peak[i:i + 1]`` and the rest, would count a
# reference each: two atomic operations of numba's runtime). Rows of :data:`LANES` classes
# or more go to the block functions of the shifted pass above; shorter rows, for which a
# call costs more than the row, to the short-row code, inlined here (float32, 262144 x 100,
# by a block function: forward 1.6x, forward + gradient 1.9x the C-contiguous input's
# time; by blocks copied into a scratch, 1.2-1.5x and 1.1-1.7x, 2026-12-06).


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def forward_strided_rows(blocks, x, w, smoothing, peak, total, smooth, bad):
    """:func:`forward_rows` for an ``x`` ``(N, C)`` whose columns are adjacent and whose rows
    lie apart (any row stride): the same results, bit for bit (a row's sums depend on the
    row alone)."""
    n = x.shape[0]
    for b in prange(blocks):
        for i in range(b * n // blocks, (b + 1) * n // blocks):
            row = row_window(x, i)
            if x.shape[1] >= LANES:
                _shifted_forward(row, i, i + 1, w, smoothing, peak, total, smooth, bad)
            else:
                _short_row(row, i, w, smoothing, peak, total, smooth, bad, row, False)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def gradient_strided_rows(blocks, x, t, w, smoothing, factor, spread, hit, peak, total, smooth,
                          bad, a, g):
    """:func:`gradient_rows` into ``g`` (C-contiguous) for an ``x`` as
    :func:`forward_strided_rows` takes it: the same results, bit for bit."""
    n = x.shape[0]
    for b in prange(blocks):
        for i in range(b * n // blocks, (b + 1) * n // blocks):
            row = row_window(x, i)
            if x.shape[1] >= LANES:
                _shifted_gradient(row, i, i + 1, t, w, smoothing, factor, spread, hit, peak,
                                  total, smooth, bad, a, g)
            else:
                _short_gradient(row, i, i + 1, t, w, smoothing, factor, spread, hit, peak,
                                total, smooth, bad, a, g)


# --- probability targets -----------------------------------------------------------------
#
# A target of class probabilities ``q`` (the input's shape) smoothed to ``q' = (1 - eps) q +
# eps / C`` gives, with ``z_c = x_c - m`` (``m`` the row maximum), ``S = sum_c exp(z_c)`` and
# ``Q = sum_c w_c q'_c``,
#
#     loss = -sum_c w_c q'_c (z_c - log S) = Q log S - sum_c w_c q'_c z_c
#
# (torch's ``-(w q' log_softmax(x)).sum()``: for targets and weights >= 0 its terms are all
# >= 0, so nothing cancels), and its gradient ``Q exp(z_c) / S - w_c q'_c``. Each array is
# read from memory once: a row's maximum first, then one loop over the row, its logits now
# in the second-level cache and its target read from memory, taking the four sums ``S``,
# ``A = sum w q``, ``B = sum w q z`` and ``T = sum w z``, with ``Q = (1 - eps) A + eps / C W``
# and ``sum w q' z = (1 - eps) B + eps / C T``. The gradient's exponentials are written on
# that loop and rescaled on a second one (the row and its target in cache), as the
# class-index rows do it. A K-dimensional input ``(N, C, D)`` takes the same sums per
# position, by blocks of contiguous positions (:func:`probability_columns`).


@numba.njit(forceinline=True)
def _probability_loss(big_q, s, b, t, eps, spread):
    """A row's (or position's) loss from its sums, ``Q log S - sum w q' z`` (float64), and
    ``-0.0`` where that is exactly 0, as torch's is: torch negates its sum of ``w q'
    log_softmax``, a sum from ``+0.0`` (a one-hot target at a row's only non-vanishing
    class, or a target of zeros, gives ``-0.0``). Compiled without fast-math flags and
    inlined by LLVM, which keeps them so: under the kernels' ``nsz`` the zero's sign would
    be free."""
    loss = big_q * math.log(s) - ((1.0 - eps) * b + spread * t)
    return -0.0 if loss == 0.0 else loss


@numba.njit(inline="always", fastmath=FLAGS)
def _probability_sums(v, q, wc, m, o, write):
    """``(S, A, B, T)`` of one chunk (see above) in ``v``'s dtype, the chunk's ``exp(z)``
    written into ``o`` with ``write`` (:func:`exp_written`; else the terms are
    :func:`sum_term`'s)."""
    zero = m - m
    s, a, b, t = zero, zero, zero, zero
    for k in range(v.shape[0]):
        z = v[k] - m
        e = exp(z) if write else sum_term(z)
        if write:
            o[k] = e
        wq = wc[k] * q[k]
        s += e
        a += wq
        b += wq * z
        t += wc[k] * z
    return s, a, b, t


@_block_function
def _probability_block(x, p, i0, i1, w, w_total, eps, coef, losses, bad, g):
    """Rows ``i0:i1`` of :func:`probability_rows`."""
    n_classes = x.shape[1]
    write = g.shape[0] != 0
    acc = np.empty((2, LANES), x.dtype)
    factors = np.empty(3, x.dtype)
    spread = eps / n_classes
    for i in range(i0, i1):
        row, target = x[i], p[i]
        m = _row_max(row, acc) if n_classes >= LANES else _short_max(x, i, n_classes)
        bad[i] = 1
        losses[i] = np.nan
        if not math.isfinite(m):
            continue
        s64, a64, b64, t64 = 0.0, 0.0, 0.0, 0.0
        for c0 in range(0, n_classes, CHUNK):
            v, q, wc = row[c0:c0 + CHUNK], target[c0:c0 + CHUNK], w[c0:c0 + CHUNK]
            if write:
                s, a, b, t = _probability_sums(v, q, wc, m, g[i, c0:c0 + CHUNK], True)
            else:
                s, a, b, t = _probability_sums(v, q, wc, m, v, False)
            s64 += s
            a64 += a
            b64 += b
            t64 += t
        if not (s64 == s64 and math.isfinite(a64) and math.isfinite(b64)
                and math.isfinite(t64)):
            continue  # a nan in the row, or a target (or weight) that is not finite
        big_q = (1.0 - eps) * a64 + spread * w_total
        losses[i] = _probability_loss(big_q, s64, b64, t64, eps, spread)
        bad[i] = 0
        if write:  # the factors in x's dtype, through an array of it
            factors[0] = coef * big_q / s64
            factors[1] = coef * (1.0 - eps)
            factors[2] = coef * spread
            scale, keep, floor = factors[0], factors[1], factors[2]
            for c0 in range(0, n_classes, CHUNK):
                o, q, wc = g[i, c0:c0 + CHUNK], target[c0:c0 + CHUNK], w[c0:c0 + CHUNK]
                for k in range(o.shape[0]):
                    o[k] = o[k] * scale - wc[k] * (keep * q[k] + floor)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def probability_rows(blocks, x, p, w, w_total, eps, coef, losses, bad, g):
    """Cross entropy of probability targets per row of ``x`` ``(N, C)`` (C-contiguous, float32
    or float64) and ``p`` (its shape and dtype): ``losses`` (float64 ``(N,)``, see above;
    ``w`` the ``C`` class weights, all 1 without a weight, ``w_total`` their float64 sum,
    ``eps`` the label smoothing) and ``bad`` (uint8: 1 where the row holds a nan or its
    maximum is not finite, or a sum over the target is not finite; the loss is then nan and
    the caller declines). With ``g`` of ``x``'s shape, also the gradient of ``coef *
    sum(losses)`` into ``g``; ``g`` of shape ``(0, C)`` writes none. By ``blocks`` blocks
    of consecutive rows, each by a block function."""
    n = x.shape[0]
    for b in prange(blocks):
        _probability_block(x, p, b * n // blocks, (b + 1) * n // blocks, w, w_total, eps,
                           coef, losses, bad, g)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def row_coefficients(t, w, weighted, ignore_index, c, eps, w_total, mean, safe, factor, spread,
                     hit):
    """The per-row arguments of :func:`gradient_rows` for targets ``t`` ``(N,)``.

    For ``C = c`` classes: ``safe`` (the target, 0 where ignored), and, with ``coef`` the
    derivative of the reduced loss by the row's (``1 / sum w_t`` over the rows not ignored
    for ``mean``, else 1; 0 where ignored),

        factor = coef ((1 - eps) w_t + eps / C W),  spread = coef eps / C,
        hit = coef (1 - eps) w_t

    computed in float64 and rounded to their arrays' dtype, as
    ``_CrossEntropyPass.with_gradient`` in :mod:`anyloss.backends.numpy.cross_entropy`
    has them. Returns -1, or the first row whose target is neither ``ignore_index`` nor
    a class (nothing else written then)."""
    n = t.shape[0]
    weights = 0.0
    for i in range(n):
        k = t[i]
        if k == ignore_index:
            continue
        if k < 0 or k >= c:
            return i
        weights += np.float64(w[k]) if weighted else 1.0
    scale = (1.0 / weights if weights != 0 else np.nan) if mean else 1.0
    for i in range(n):
        k = t[i]
        usable = k != ignore_index
        w_t = (np.float64(w[k]) if weighted else 1.0) if usable else 0.0
        coef = scale if usable else 0.0
        safe[i] = k if usable else 0
        factor[i] = coef * ((1.0 - eps) * w_t + (eps / c) * w_total)
        spread[i] = coef * (eps / c)
        hit[i] = coef * (1.0 - eps) * w_t
    return -1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def row_losses(x, t, w, weighted, ignore_index, eps, w_total, peak, total, smooth, bad, losses):
    """The losses of class-index cross entropy (float64) from the row pass's results.

        losses[i] = (1 - eps) w_t (lse - z_t) + eps / C (W lse - smooth[i])

    with ``t = t[i]``, ``lse = log(total[i])``, ``z_t = x[i, t] - peak[i]`` (in float64,
    exact for float32: the shift is no longer the maximum, and a float32 difference would
    round a confident row's small loss), ``w_t = w[t]`` (1 when not ``weighted``) and
    ``W`` = ``w_total``; 0 where ``t == ignore_index``. The arithmetic of
    ``_CrossEntropyPass.losses`` in :mod:`anyloss.backends.numpy.cross_entropy`, one row at
    a time, without its temporaries.

    Returns ``(sum of the losses, sum of w_t over the rows not ignored, -1)``, both added
    in order in float64, or stops at the first row whose target is neither ``ignore_index``
    nor a class, or that the pass flagged ``bad``, and returns its index last (the caller
    then declines)."""
    n, c = x.shape
    loss_sum = 0.0
    weights = 0.0
    for i in range(n):
        k = t[i]
        if k == ignore_index:
            losses[i] = 0.0
            continue
        if k < 0 or k >= c or bad[i] != 0:
            return loss_sum, weights, i
        w_t = np.float64(w[k]) if weighted else 1.0
        lse = math.log(total[i])
        loss = w_t * (lse - (np.float64(x[i, k]) - np.float64(peak[i])))
        if eps > 0:
            loss = (1.0 - eps) * loss + (eps / c) * (w_total * lse - smooth[i])
        losses[i] = loss
        loss_sum += loss
        weights += w_t
    return loss_sum, weights, -1


@numba.njit(inline="always", fastmath=FLAGS)
def _column_max(x3, n, j0, j1):
    """The maximum over the classes of each position ``j0:j1`` of sample ``n`` (a new array
    of ``x3``'s dtype), a nan winning, by one loop over the contiguous positions per
    class."""
    m = x3[n, 0, j0:j1].copy()
    for c in range(1, x3.shape[1]):
        v = x3[n, c, j0:j1]
        for j in range(m.shape[0]):
            m[j] = v[j] if (v[j] > m[j] or v[j] != v[j]) else m[j]
    return m


@numba.njit(inline="always", fastmath=FLAGS)
def _column_block(x3, n, j0, j1, w, smoothing, peak, total, smooth, bad, g, write):
    """Positions ``j0:j1`` of sample ``n``: the column analogue of the row pass, every loop
    running over the contiguous positions. Returns the float64 totals of the block."""
    c_count = x3.shape[1]
    width = j1 - j0
    m = _column_max(x3, n, j0, j1)
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
        if smoothing:
            wc = w[c]
            for j in range(v.shape[0]):
                sm[j] += wc * (v[j] - m[j])
    for j in range(width):
        peak[n, j0 + j] = m[j]
        total[n, j0 + j] = s[j]
        smooth[n, j0 + j] = sm[j]
        bad[n, j0 + j] = 0 if math.isfinite(m[j]) else 1
    return s


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def forward_columns(x3, w, smoothing, width, peak, total, smooth, bad):
    """Per (sample, position) of ``x3`` ``(N, C, D)``: ``peak``, ``total``, ``smooth``, ``bad``
    ``(N, D)``, by blocks of ``width`` positions."""
    n_count, d_count = x3.shape[0], x3.shape[2]
    per = (d_count + width - 1) // width
    for b in prange(n_count * per):
        n, j0 = b // per, (b % per) * width
        j1 = min(j0 + width, d_count)
        _column_block(x3, n, j0, j1, w, smoothing, peak, total, smooth, bad, x3, False)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def gradient_columns(x3, t2, w, smoothing, width, factor, spread, hit, peak, total, smooth, bad,
                     g):
    """:func:`forward_columns` and the gradient ``g`` ``(N, C, D)``; positions flagged ``bad``
    are left to the caller."""
    n_count, c_count, d_count = x3.shape
    per = (d_count + width - 1) // width
    for b in prange(n_count * per):
        n, j0 = b // per, (b % per) * width
        j1 = min(j0 + width, d_count)
        s = _column_block(x3, n, j0, j1, w, smoothing, peak, total, smooth, bad, g, True)
        nw = j1 - j0
        scale = np.empty(nw, g.dtype)
        for j in range(nw):
            scale[j] = factor[n, j0 + j] / s[j]
        minus = spread[n, j0:j1]
        for c in range(c_count):
            o = g[n, c, j0:j1]
            wc = w[c] if smoothing else w[0]
            for j in range(nw):
                o[j] = o[j] * scale[j] - minus[j] * wc
        for j in range(nw):
            if bad[n, j0 + j] == 0:
                g[n, t2[n, j0 + j], j0 + j] -= hit[n, j0 + j]


@numba.njit(inline="always", fastmath=FLAGS)
def _probability_column_block(x3, p3, n, j0, j1, w, w_total, eps, coef, losses, bad, g, write):
    """Positions ``j0:j1`` of sample ``n`` of :func:`probability_columns`: the sums of
    :func:`_probability_block` per position, every loop over the contiguous positions (the
    column analogue, as :func:`_column_block` is of the class-index rows), in ``x``'s
    dtype over chunks of :data:`CHUNK` classes (as the rows take them), added in float64
    after each. With ``write``, each position's exponentials are written into ``g`` on the
    sums' loop and rescaled on a second one."""
    c_count = x3.shape[1]
    width = j1 - j0
    m = _column_max(x3, n, j0, j1)
    # Eight arrays of their own: the four sums as rows of one array, and the exponential
    # read back from ``o``, took 6.8 against 4.4 ms at (16, 21, 16384) float32; float64
    # sums (loaded and stored per class) 6.7 ms (2026-12-06).
    s = np.zeros(width, x3.dtype)
    a = np.zeros(width, x3.dtype)
    b = np.zeros(width, x3.dtype)
    t = np.zeros(width, x3.dtype)
    s64 = np.zeros(width, np.float64)
    a64 = np.zeros(width, np.float64)
    b64 = np.zeros(width, np.float64)
    t64 = np.zeros(width, np.float64)
    e = np.empty(width, x3.dtype)
    for c in range(c_count):
        v, q, wc = x3[n, c, j0:j1], p3[n, c, j0:j1], w[c]
        o = g[n, c, j0:j1] if write else e
        for j in range(width):
            z = v[j] - m[j]
            ej = exp(z)
            o[j] = ej
            wq = wc * q[j]
            s[j] += ej
            a[j] += wq
            b[j] += wq * z
            t[j] += wc * z
        if (c + 1) % CHUNK == 0 or c + 1 == c_count:
            for j in range(width):
                s64[j] += s[j]
                a64[j] += a[j]
                b64[j] += b[j]
                t64[j] += t[j]
                s[j] = 0.0
                a[j] = 0.0
                b[j] = 0.0
                t[j] = 0.0
    s, a, b, t = s64, a64, b64, t64
    spread = eps / c_count
    scale = np.empty(width, x3.dtype)
    for j in range(width):
        i = j0 + j
        bad[n, i] = 1
        losses[n, i] = np.nan
        scale[j] = 0.0
        if not (math.isfinite(m[j]) and s[j] == s[j] and math.isfinite(a[j])
                and math.isfinite(b[j]) and math.isfinite(t[j])):
            continue  # as in _probability_block
        big_q = (1.0 - eps) * a[j] + spread * w_total
        losses[n, i] = _probability_loss(big_q, s[j], b[j], t[j], eps, spread)
        bad[n, i] = 0
        scale[j] = coef * big_q / s[j]
    if write:
        factors = np.empty(2, x3.dtype)  # in x's dtype, through an array of it
        factors[0] = coef * (1.0 - eps)
        factors[1] = coef * spread
        keep, floor = factors[0], factors[1]
        for c in range(c_count):
            o, q, wc = g[n, c, j0:j1], p3[n, c, j0:j1], w[c]
            for j in range(width):
                o[j] = o[j] * scale[j] - wc * (keep * q[j] + floor)


@parallel_kernel(cache=True, fastmath=FLAGS, nogil=True)
def probability_columns(x3, p3, w, w_total, eps, coef, width, losses, bad, g):
    """:func:`probability_rows` of a K-dimensional input as ``x3`` ``(N, C, D)`` (class axis
    of stride ``D``; ``p3`` its shape and dtype), per (sample, position): ``losses`` and
    ``bad`` ``(N, D)``, and with ``g`` of ``x3``'s shape the gradient of ``coef *
    sum(losses)`` (``g`` of shape ``(0, C, D)`` writes none), by blocks of ``width``
    positions."""
    n_count, d_count = x3.shape[0], x3.shape[2]
    per = (d_count + width - 1) // width
    for blk in prange(n_count * per):
        n, j0 = blk // per, (blk % per) * width
        j1 = min(j0 + width, d_count)
        if g.shape[0] != 0:
            _probability_column_block(x3, p3, n, j0, j1, w, w_total, eps, coef, losses, bad,
                                      g, True)
        else:
            _probability_column_block(x3, p3, n, j0, j1, w, w_total, eps, coef, losses, bad,
                                      x3, False)
