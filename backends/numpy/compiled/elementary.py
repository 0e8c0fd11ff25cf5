"""Elementary functions for numba kernels, written so that LLVM vectorises the loops.

``exp``, ``log``, ``log1p``, ``softplus``, ``log1p_exp_neg_abs`` and ``logaddexp``
take a float32 or a float64 scalar inside ``@numba.njit`` code; the implementation
is chosen by the argument's type (:func:`numba.extending.overload`) and inlined.
None calls libm: range reduction, a polynomial and exponent arithmetic on the bit
pattern, with ``select``s instead of branches, so that a loop over an array
compiles to SIMD code on any x86-64 or ARM CPU (NumPy's own SIMD ``exp`` and
``log`` exist only for some CPU levels and dtypes).

Algorithms
----------
- ``exp``: ``x = k ln2 + r`` with ``|r| <= ln2 / 2`` (Cody and Waite's two-part
  ``ln 2``), ``k`` rounded by the "magic number" addition, ``exp(r)`` by a
  polynomial, and ``2^k`` applied as two exact powers of two so that results in
  the subnormal range round once (gradual underflow) and large ones overflow to
  inf. float32: the polynomial of Cephes' ``expf`` (S. L. Moshier, *Methods and
  Programs for Mathematical Functions*, 1989); float64: the Chebyshev interpolant
  of degree 11 of ``exp`` on ``|r| <= ln2 / 2`` (:data:`EXP_COEFFICIENTS64`, 0.15
  ulp before the evaluation's roundings), by Horner's rule.
- ``log``: ``x = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` (subnormals scaled
  by 2^24 or 2^54 first; ``e`` and ``m`` from the bits offset by ``bits(1) -
  bits(sqrt(1/2))``, the reduction of musl libc's ``logf``), then ``log(m)`` with
  ``f = m - 1``. float32: Cephes'
  ``logf`` polynomial in ``f``; float64: the series of ``2 atanh(s)``,
  ``s = f / (2 + f)``, with the minimax coefficients of fdlibm's ``e_log.c``
  (Sun Microsystems, 1993), ``ln 2`` again in two parts.
- ``log1p``: ``u = 1 + x`` rounded, ``log(u)`` plus the first-order correction
  ``(x - (u - 1)) / u`` of the rounding of ``u`` (the method of fdlibm's
  ``s_log1p.c``); ``log1p(x) = x`` where ``u`` rounds to 1.
- ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``, ``log1p_exp_neg_abs(x) =
  log1p(exp(-|x|))`` and ``logaddexp(a, b) = max(a, b) + log1p(exp(-|a - b|))``
  (float32 ``logaddexp`` in float64, rounded once: where the two terms cancel,
  float32's rounding of ``a - b`` would show in the result).

Special values are NumPy's: nan in, nan out; ``exp(-inf) = 0``,
``exp(inf) = inf``, ``log(0) = -inf``, ``log(x < 0) = nan``, ``log1p(-1) = -inf``,
``log1p(-0.0) = -0.0``, ``logaddexp(inf, inf) = inf``,
``logaddexp(-inf, -inf) = -inf``. The accuracy (tests/test_elementary.py) is
within 2 ulp in float32 and 4 ulp in float64 over the whole range.

Integer work stays in the float's own width and float <-> integer conversions go
through the magic constant's bit pattern (AVX2 has no packed float64 <-> int64
conversion, which LLVM would otherwise do lane by lane), so the loops vectorise on
SSE2, AVX2, AVX-512 and NEON alike.

The kernels compile with ``fastmath`` flags that keep nan and inf semantics
(:data:`FASTMATH`: contraction into fused multiply-adds, no reassociation, which
would undo the magic-number rounding and the two-part reductions).
"""

from __future__ import annotations

import warnings
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, overload

# numba's SSA pass warns "variable '_log32_of_v126__...' is not in scope" when it inlines the
# conditional expressions of these functions into each other (``inline="always"``), two dozen
# lines on the first compile of a kernel that calls log. The compiled code is right
# (tests/test_elementary.py checks values over millions of points and the vectorised IR). Only
# the warnings that name this module's dispatch wrappers (``_<name>32_of``/``_<name>64_of``,
# as numba prefixes inlined variables) are silenced.
warnings.filterwarnings("ignore", message=r".*variable '_\w+(?:32|64)_of_v\d",
                        category=NumbaIRAssumptionWarning)

__all__ = [
    "FASTMATH",
    "JIT_OPTIONS",
    "exp",
    "log",
    "log1p",
    "softplus",
    "log1p_exp_neg_abs",
    "logaddexp",
    "apply",
    "exp_reduced32",
    "exp_reduced64",
    "exp_horner32",
    "EXP_COEFFICIENTS64",
    "EXP_COEFFICIENTS32",
    "fma",
    "bits_to_float32",
    "bits_to_float64",
    "float32_bits",
    "float64_bits",
    "by_type",
    "FUNCTIONS",
]

#: The fastmath flags of the kernels that call these functions: fused multiply-adds only.
FASTMATH = {"contract"}

#: The numba options of every kernel that calls these functions: :data:`FASTMATH`, and
#: NumPy's error model (a float division by zero gives inf or nan; numba's default
#: Python model tests every division and cannot vectorise the loop).
JIT_OPTIONS: dict[str, Any] = {"fastmath": FASTMATH, "error_model": "numpy"}

f32, f64 = np.float32, np.float64


# --- bit patterns ---------------------------------------------------------------------------


def _layout(ty):
    """(LLVM float type, LLVM integer type of its width, exponent bias, mantissa bits)."""
    if ty.bitwidth == 32:
        return ir.FloatType(), ir.IntType(32), 127, 23
    return ir.DoubleType(), ir.IntType(64), 1023, 52


def _magic(fty):
    """1.5 * 2^mantissa bits: adding it to a float below 2^(mantissa bits - 1) in magnitude
    rounds it to an integer held in the low bits of the sum's pattern."""
    return ir.Constant(fty, 12582912.0 if fty == ir.FloatType() else 6755399441055744.0)


def _integer(builder, kf, ity):
    """The integer value of the integral float ``kf`` (``|kf| < 2^22`` / ``2^51``), from the bits
    of ``kf + magic``: AVX2 has no packed float64 -> int64 conversion, so ``fptosi`` would be
    done lane by lane; this is one add and one integer subtraction per lane."""
    magic = _magic(kf.type)
    return builder.sub(builder.bitcast(builder.fadd(kf, magic), ity),
                       builder.bitcast(magic, ity))


def _float(builder, k, fty):
    """The float value of the integer ``k`` (same bounds), the inverse of :func:`_integer`
    (AVX2 has no packed int64 -> float64 conversion either)."""
    magic = _magic(fty)
    return builder.fsub(builder.bitcast(builder.add(k, builder.bitcast(magic, k.type)), fty), magic)


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``: one instruction where the CPU has fused
    multiply-adds, exact in software elsewhere), for three floats of one type. LLVM does
    not split or merge the intrinsic, not even in a kernel compiled with reassociation,
    which folds ``y - k C1 - k C2`` into ``y - k (C1 + C2)``: Cody and Waite's two-part
    reductions written with it stay two parts (tests/test_cross_entropy_fast.py: 1 ulp,
    where the folded form was 4 ulp off in float32 and 209 in float64)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        fty = args[0].type
        function = builder.module.declare_intrinsic("llvm.fma", [fty],
                                                    ir.FunctionType(fty, [fty, fty, fty]))
        return builder.call(function, args)

    return a(a, b, c), codegen


@intrinsic
def _scale(typingctx, p, k):
    """``p * 2^k`` for an integral float ``k`` in ``[-2 bias - 2, 2 bias + 2]``, as ``(p *
    2^(k >> 1)) * 2^(k - (k >> 1))``: both factors are normal powers of two, so the first
    product is exact and the second rounds once (gradual underflow, overflow to inf).
    The integer arithmetic stays in the float's width, so that it vectorises lane for lane."""
    if not (isinstance(p, types.Float) and p == k):
        return None

    def codegen(context, builder, signature, args):
        fty, ity, bias, mant = _layout(signature.args[0])
        value, kf = args
        ki = _integer(builder, kf, ity)
        k1 = builder.ashr(ki, ir.Constant(ity, 1))
        for part in (k1, builder.sub(ki, k1)):
            power = builder.shl(builder.add(part, ir.Constant(ity, bias)), ir.Constant(ity, mant))
            value = builder.fmul(value, builder.bitcast(power, fty))
        return value

    return p(p, k), codegen


def _sqrt_half_bits(ity):
    """The bits of sqrt(1/2) rounded, in the float width of ``ity``."""
    return ir.Constant(ity, 0x3F3504F3 if ity.width == 32 else 0x3FE6A09E667F3BCD)


def _offset_bits(builder, x):
    """``x``'s bits plus ``bits(1) - bits(sqrt(1/2))``: the exponent field then counts
    from sqrt(1/2) to sqrt(2) rather than from 1 to 2 (the reduction of musl's logf)."""
    ity, mant = (ir.IntType(32), 23) if x.type == ir.FloatType() else (ir.IntType(64), 52)
    one = ir.Constant(ity, 0x3F800000 if ity.width == 32 else 0x3FF0000000000000)
    return builder.add(builder.bitcast(x, ity), builder.sub(one, _sqrt_half_bits(ity))), ity, mant


@intrinsic
def _mantissa(typingctx, x):
    """``m`` in ``[sqrt(1/2), sqrt(2))`` with ``x = 2^e m``, for a positive normal ``x``."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        bits, ity, mant = _offset_bits(builder, args[0])
        low = builder.and_(bits, ir.Constant(ity, (1 << mant) - 1))
        return builder.bitcast(builder.add(low, _sqrt_half_bits(ity)), args[0].type)

    return x(x), codegen


@intrinsic
def _exponent(typingctx, x):
    """``e`` (a float of ``x``'s type) with ``x = 2^e m``, ``m`` as :func:`_mantissa` gives it."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        bits, ity, mant = _offset_bits(builder, args[0])
        bias = 127 if ity.width == 32 else 1023
        e = builder.sub(builder.ashr(bits, ir.Constant(ity, mant)), ir.Constant(ity, bias))
        return _float(builder, e, args[0].type)

    return x(x), codegen


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


@intrinsic
def float32_bits(typingctx, value):
    """The int32 bit pattern of the float32 ``value`` (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def float64_bits(typingctx, value):
    """The int64 bit pattern of the float64 ``value`` (a bitcast, no conversion)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


def _jit(function):
    """Compile a function of this module: with :data:`JIT_OPTIONS`, inlined by LLVM
    (``forceinline``) into each caller.

    Not inlined into numba's IR (``inline="always"``), which copies a callee's IR, its own
    callees inlined again, at every call site of every kernel: compiled once per signature
    and inlined by LLVM, the elementwise and CTC kernels' first compile (``anyloss
    compile`` of their thirteen functions, cold) took 179.5 against 242.2 s, at the same
    speed (2026-12-06, two processes side by side). The instructions keep this module's
    fast-math flags inside a caller compiled with others: the cross-entropy kernels'
    reassociation no longer reaches these polynomials."""
    return numba.njit(forceinline=True, **JIT_OPTIONS)(function)


# --- exp ----------------------------------------------------------------------------------------

_MAGIC32 = f32(12582912.0)  # 1.5 * 2^23: adding it rounds a float32 below 2^22 to an integer
_MAGIC64 = f64(6755399441055744.0)  # 1.5 * 2^52


#: ``exp(r)`` on ``|r| <= ln 2 / 2`` in float64 as ``sum_k c_k r^k``, ``c_0`` first: the
#: Chebyshev interpolant of degree 11 of ``exp`` on that interval (``mpmath.chebyfit``, 50
#: digits), its coefficients rounded once to float64. Its relative error there, rounding of
#: the coefficients included, is 0.15 ulp (1.7e-17, evaluated at 50 digits on 4001 points);
#: ``tests/test_elementary.py`` derives it again. Horner's rule takes 11 fused multiply-adds
#: where the degree-13 Taylor series took 14 operations: the float64 cross-entropy pass on
#: 256-bit vectors went from 0.83 to 0.74 ns a value (one thread, data in L2). float32 keeps
#: Cephes' polynomial, whose form ``p r^2 + r + 1`` stays within 1 ulp; Horner's rule with
#: the degree-6 interpolant (6 operations against 8) reached 1.3 ulp.
EXP_COEFFICIENTS64 = (
    1.0, 1.0, 0.5000000000000019, 0.1666666666666668, 0.0416666666664881,
    0.008333333333319601, 0.0013888888952314775, 0.00019841269890047113,
    2.4801485482328494e-05, 2.755724091857897e-06, 2.763263963904103e-07,
    2.5110037605963777e-08)
_C64 = EXP_COEFFICIENTS64

#: ``exp(r)`` on ``|r| <= ln 2 / 2`` in float64, ``c_0`` first: the Chebyshev interpolant of
#: degree 10 (``mpmath.chebyfit``, 50 digits), its coefficients rounded once to float64
#: (``c_0`` is 1 exactly); within 2.97 ulp there, their rounding included (3.3e-16,
#: ``tests/test_elementary.py`` derives it again). The polynomial of the float64
#: cross-entropy kernels' summed terms (:func:`exp_summed64`), where a term's error of a few
#: ulps is one of the total: one multiply-add fewer than :data:`EXP_COEFFICIENTS64`, of the
#: 15 a float64 term took, and the float64 forward at 1024 x 32000 went from 1.21-1.35x
#: (four runs) to 1.16x (three) the read pass, two threads, in a noisy hour (2026-12-06).
EXP_SUMMED_COEFFICIENTS64 = (
    1.0, 1.0000000000000067, 0.5000000000000006, 0.16666666666554406, 0.04166666666657314,
    0.008333333385667782, 0.0013888888932488599, 0.00019841170270440067,
    2.4801504346997686e-05, 2.764018079620985e-06, 2.7626357241447223e-07)
_CS64 = EXP_SUMMED_COEFFICIENTS64

#: ``exp(r)`` on ``|r| <= ln 2 / 2`` in float32, ``c_0`` first: the Chebyshev interpolant of
#: degree 6 (``mpmath.chebyfit``, 50 digits), coefficients rounded once to float32; 0.34 ulp
#: there, their rounding included (``tests/test_elementary.py`` derives it again). By
#: Horner's rule, 6 fused multiply-adds against the 8 operations of Cephes' form, it is the
#: polynomial of the cross-entropy row kernels' summed terms (0.30 -> 0.27 ns a value of
#: the float32 pass, one thread, data in L2); values written keep Cephes'
#: (:func:`exp_reduced32`), whose form stays within 1 ulp where Horner's rule reached 1.3.
EXP_COEFFICIENTS32 = (
    1.0, 1.0, 0.5, 0.16666415333747864, 0.04166635125875473, 0.00837512593716383,
    0.0013941108481958508)
_C32 = tuple(f32(c) for c in EXP_COEFFICIENTS32)


@_jit
def exp_reduced32(r):
    """``exp(r)`` of a float32 ``|r| <= ln 2 / 2``: the polynomial of Cephes' ``expf``."""
    p = f32(1.9875691500e-4)
    p = p * r + f32(1.3981999507e-3)
    p = p * r + f32(8.3334519073e-3)
    p = p * r + f32(4.1665795894e-2)
    p = p * r + f32(1.6666665459e-1)
    p = p * r + f32(5.0000001201e-1)
    return p * (r * r) + r + f32(1.0)


@_jit
def _horner(r, coefficients):
    """``sum_k c_k r^k`` by Horner's rule, for a tuple of coefficients of ``r``'s type,
    ``c_0`` first (a constant tuple: LLVM unrolls the loop into fused multiply-adds)."""
    n = len(coefficients)
    p = coefficients[n - 1]
    for i in range(n - 2, -1, -1):
        p = p * r + coefficients[i]
    return p


@_jit
def exp_horner32(r):
    """``exp(r)`` of a float32 ``|r| <= ln 2 / 2``: :data:`EXP_COEFFICIENTS32` by Horner's
    rule."""
    return _horner(r, _C32)


@_jit
def exp_summed64(r):
    """``exp(r)`` of a float64 ``|r| <= ln 2 / 2`` within 3 ulp, for terms that are only summed:
    :data:`EXP_SUMMED_COEFFICIENTS64` by Horner's rule."""
    return _horner(r, _CS64)


@_jit
def exp_reduced64(r):
    """``exp(r)`` of a float64 ``|r| <= ln 2 / 2``: :data:`EXP_COEFFICIENTS64` by Horner's
    rule."""
    return _horner(r, _C64)


@_jit
def _exp32(x):
    # Clamped so that k stays within [-150, 128]; nan goes through as 0 and comes back at the end.
    xc = x if x == x else f32(0.0)
    xc = f32(-104.0) if xc < f32(-104.0) else xc
    xc = f32(89.0) if xc > f32(89.0) else xc
    t = xc * f32(1.44269504088896341) + _MAGIC32
    kf = t - _MAGIC32
    r = xc - kf * f32(0.693359375) - kf * f32(-2.12194440e-4)
    y = _scale(exp_reduced32(r), kf)
    return y if x == x else x


@_jit
def _exp64(x):
    xc = x if x == x else 0.0
    xc = -746.0 if xc < -746.0 else xc
    xc = 710.0 if xc > 710.0 else xc
    t = xc * 1.4426950408889634 + _MAGIC64
    kf = t - _MAGIC64
    r = xc - kf * 6.93147180369123816490e-01 - kf * 1.90821492927058770002e-10
    y = _scale(exp_reduced64(r), kf)
    return y if x == x else x


# --- log ------------------------------------------------------------------------------------------


@_jit
def _log_positive32(x):
    """log(x) for finite x > 0 (normal or subnormal); the callers handle the rest."""
    small = x < f32(1.1754943508222875e-38)
    xs = x * f32(16777216.0) if small else x  # 2^24: subnormals become normal
    f = _mantissa(xs) - f32(1.0)
    ef = _exponent(xs) - (f32(24.0) if small else f32(0.0))
    z = f * f
    y = f32(7.0376836292e-2)
    y = y * f - f32(1.1514610310e-1)
    y = y * f + f32(1.1676998740e-1)
    y = y * f - f32(1.2420140846e-1)
    y = y * f + f32(1.4249322787e-1)
    y = y * f - f32(1.6668057665e-1)
    y = y * f + f32(2.0000714765e-1)
    y = y * f - f32(2.4999993993e-1)
    y = y * f + f32(3.3333331174e-1)
    y = y * f * z
    y = y + ef * f32(-2.12194440e-4)
    y = y - f32(0.5) * z
    return f + y + ef * f32(0.693359375)


@_jit
def _log_positive64(x):
    """log(x) for finite x > 0 (normal or subnormal); the callers handle the rest."""
    small = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if small else x  # 2^54
    f = _mantissa(xs) - 1.0
    ef = _exponent(xs) - (54.0 if small else 0.0)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                                              + w * 1.531383769920937332e-01))
    t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                                              + w * (1.818357216161805012e-01
                                                     + w * 1.479819860511658591e-01)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return (ef * 6.93147180369123816490e-01
            - ((hfsq - (s * (hfsq + r) + ef * 1.90821492927058770002e-10)) - f))


@_jit
def _log32(x):
    y = _log_positive32(f32(1.0) if not (x > f32(0.0)) or x == np.inf else x)
    y = f32(-np.inf) if x == f32(0.0) else y
    y = f32(np.nan) if x < f32(0.0) else y
    return x if x == np.inf or x != x else y


@_jit
def _log64(x):
    y = _log_positive64(1.0 if not (x > 0.0) or x == np.inf else x)
    y = -np.inf if x == 0.0 else y
    y = np.nan if x < 0.0 else y
    return x if x == np.inf or x != x else y


# --- log1p ----------------------------------------------------------------------------------------


@_jit
def _log1p32(x):
    u = f32(1.0) + x
    ok = u > f32(0.0) and u != np.inf
    us = u if ok else f32(2.0)
    c = (f32(1.0) - (us - x)) if us >= f32(2.0) else (x - (us - f32(1.0)))
    y = _log_positive32(us) + c / us
    y = f32(-np.inf) if x == f32(-1.0) else y
    y = f32(np.nan) if x < f32(-1.0) else y
    # x itself where 1 + x rounds to 1 (tiny x, signed zeros), at +inf and at nan
    return x if u == f32(1.0) or x == np.inf or x != x else y


@_jit
def _log1p64(x):
    u = 1.0 + x
    ok = u > 0.0 and u != np.inf
    us = u if ok else 2.0
    c = (1.0 - (us - x)) if us >= 2.0 else (x - (us - 1.0))
    y = _log_positive64(us) + c / us
    y = -np.inf if x == -1.0 else y
    y = np.nan if x < -1.0 else y
    return x if u == 1.0 or x == np.inf or x != x else y


# --- the dispatching names ------------------------------------------------------------------------


def by_type(name, f32_impl, f64_impl, arity=1, *, owner="elementary",
            jit_options=JIT_OPTIONS):
    """A Python function ``name`` that numba code may call on float32 or float64 values:
    ``f32_impl`` or ``f64_impl`` by the arguments' type, inlined
    (:func:`numba.extending.overload`, compiled with ``jit_options``). The implementations
    are plain functions named ``_<name>32_of``/``_<name>64_of``, the names that the warning
    filter at the top of this module expects. Called from Python, it raises TypeError
    naming ``owner.name``."""
    message = f"{owner}.{name} is called from numba code only"

    if arity == 1:
        def stub(x):
            raise TypeError(message)

        @overload(stub, inline="always", jit_options=jit_options)
        def _choose(x):
            return {types.float32: f32_impl, types.float64: f64_impl}.get(x)
    else:
        def stub(a, b):  # type: ignore[misc]
            raise TypeError(message)

        @overload(stub, inline="always", jit_options=jit_options)
        def _choose(a, b):
            if a != b:
                return None
            return {types.float32: f32_impl, types.float64: f64_impl}.get(a)

    stub.__name__ = stub.__qualname__ = name
    return stub


def _exp32_of(x):
    return _exp32(x)


def _exp64_of(x):
    return _exp64(x)


exp = by_type("exp", _exp32_of, _exp64_of)
exp.__doc__ = "``exp(x)`` of a float32 or float64 (numba code only)."


def _log32_of(x):
    return _log32(x)


def _log64_of(x):
    return _log64(x)


log = by_type("log", _log32_of, _log64_of)
log.__doc__ = "``log(x)`` of a float32 or float64 (numba code only)."


def _log1p32_of(x):
    return _log1p32(x)


def _log1p64_of(x):
    return _log1p64(x)


log1p = by_type("log1p", _log1p32_of, _log1p64_of)
log1p.__doc__ = "``log(1 + x)`` of a float32 or float64 (numba code only)."


@_jit
def _tail32(x):
    return _log1p32(_exp32(-abs(x)))


@_jit
def _tail64(x):
    return _log1p64(_exp64(-abs(x)))


def _tail32_of(x):
    return _tail32(x)


def _tail64_of(x):
    return _tail64(x)


log1p_exp_neg_abs = by_type("log1p_exp_neg_abs", _tail32_of, _tail64_of)
log1p_exp_neg_abs.__doc__ = "``log1p(exp(-|x|))`` of a float32 or float64 (numba code only)."


def _softplus32_of(x):
    return (x if x > f32(0.0) else f32(0.0)) + _tail32(x)


def _softplus64_of(x):
    return (x if x > 0.0 else 0.0) + _tail64(x)


softplus = by_type("softplus", _softplus32_of, _softplus64_of)
softplus.__doc__ = ("``log(1 + exp(x))`` of a float32 or float64, without overflow: "
                    "``max(x, 0) + log1p(exp(-|x|))`` (numba code only).")


@_jit
def _logaddexp64(a, b):
    y = (a if a > b else b) + _tail64(a - b)
    y = a + 0.6931471805599453 if a == b else y  # equal infinities: a - b is nan
    return a + b if a != a or b != b else y


def _logaddexp64_of(a, b):
    return _logaddexp64(a, b)


def _logaddexp32_of(a, b):
    # In float64, rounded once: float32's own rounding of a - b and of the tail would cost
    # up to 4 ulp where the two terms cancel.
    return f32(_logaddexp64(f64(a), f64(b)))


logaddexp = by_type("logaddexp", _logaddexp32_of, _logaddexp64_of, arity=2)
logaddexp.__doc__ = "``log(exp(a) + exp(b))`` of two float32 or two float64 (numba code only)."


# --- array loops (the tests and the benchmark) ----------------------------------------------------


def _unary_loop(function):
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = function(x[i])

    return numba.njit(cache=True, **JIT_OPTIONS)(loop)


def _binary_loop(function):
    def loop(a, b, out):
        for i in range(a.shape[0]):
            out[i] = function(a[i], b[i])

    return numba.njit(cache=True, **JIT_OPTIONS)(loop)


#: name -> the compiled loop ``(x, out)`` (``(a, b, out)`` for logaddexp) over 1-d arrays.
FUNCTIONS = {
    "exp": _unary_loop(exp),
    "log": _unary_loop(log),
    "log1p": _unary_loop(log1p),
    "softplus": _unary_loop(softplus),
    "log1p_exp_neg_abs": _unary_loop(log1p_exp_neg_abs),
    "logaddexp": _binary_loop(logaddexp),
}


def apply(name: str, *arrays: np.ndarray) -> np.ndarray:
    """``name`` (a key of :data:`FUNCTIONS`) over 1-d float32 or float64 arrays, serially."""
    arrays = tuple(np.ascontiguousarray(a) for a in arrays)
    out = np.empty_like(arrays[0])
    FUNCTIONS[name](*arrays, out)
    return out
