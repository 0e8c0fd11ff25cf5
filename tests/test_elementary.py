"""The compiled kernels' own elementary functions: accuracy in ulps over millions of points,
NumPy's special values, and loops that vectorise without libm calls.

References are independent of the code under test: for float32, NumPy's float64
functions (whose error, below 1 float64 ulp, is 2^-29 of a float32 ulp); for float64,
NumPy's ``longdouble`` functions where ``longdouble`` carries more bits than float64
(x86-64 Linux: 64-bit mantissa).
"""

from __future__ import annotations

import platform
import re

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from anyloss.backends.numpy.compiled import elementary  # noqa: E402

UNARY = ("exp", "log", "log1p", "softplus", "log1p_exp_neg_abs")
#: The stated bounds, in units in the last place of the result.
BOUND = {np.float32: 2, np.float64: 4}
EXTENDED = np.finfo(np.longdouble).nmant > 52


def _reference(name, x):
    """``name`` at ``x`` in a wider type: float64 for float32, longdouble for float64."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):  # casting a signalling nan pattern warns
        v = x.astype(wide)
        if name == "exp":
            return np.exp(v)
        if name == "log":
            return np.log(v)
        if name == "log1p":
            return np.log1p(v)
        tail = np.log1p(np.exp(-np.abs(v)))
        if name == "log1p_exp_neg_abs":
            return tail
        return np.maximum(v, 0) + tail  # softplus


def _ordered(a):
    """The bit patterns of ``a`` as integers in the order of the values (-0 and +0 equal)."""
    kind = np.int32 if a.dtype == np.float32 else np.int64
    bits = a.view(kind).astype(np.int64)
    magnitude = bits & np.int64(np.iinfo(kind).max)
    return np.where(bits < 0, -magnitude, magnitude)


def ulp_distance(got, reference):
    """How many representable values of ``got``'s dtype lie between ``got`` and the
    reference rounded to that dtype (0 where both are nan or equal)."""
    with np.errstate(over="ignore"):
        rounded = reference.astype(got.dtype)
        d = np.abs(_ordered(got) - _ordered(rounded))
    same = (np.isnan(got) & np.isnan(rounded)) | (got == rounded)
    return np.where(same, 0, d)


def _points(dtype, n):
    """Random bit patterns over the whole range (every sign, exponent, subnormals, inf and
    nan), and dense sweeps near the points where the functions change behaviour."""
    rng = np.random.default_rng(20261203)
    kind = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(kind).max, n, dtype=kind, endpoint=True)
    info = np.finfo(dtype)
    edge = 104.0 if dtype == np.float32 else 746.0
    sweeps = [
        np.linspace(-edge, edge, n // 4),  # exp: overflow, underflow, the subnormal results
        np.linspace(-2, 2, n // 8),  # log1p near -1, everything near 0 and 1
        np.linspace(0.5, 2.0, n // 8),  # log near 1
        -1.0 + np.geomspace(info.eps / 4, 1.0, n // 16),  # log1p just above -1
        np.geomspace(float(info.smallest_subnormal), float(info.tiny) * 4, n // 16),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, 1.0, float(info.max),
                  float(info.tiny), float(info.smallest_subnormal)]),
    ]
    return np.concatenate([bits.view(dtype), *(s.astype(dtype) for s in sweeps)])


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def points(request):
    dtype = request.param
    if dtype == np.float64 and not EXTENDED:
        pytest.skip("no longdouble wider than float64 here for the float64 reference")
    return _points(dtype, 4_000_000 if dtype == np.float32 else 2_000_000)


@pytest.mark.parametrize("name", UNARY)
def test_accuracy_in_ulps(points, name):
    got = elementary.apply(name, points)
    d = ulp_distance(got, _reference(name, points))
    worst = int(np.argmax(d))
    bound = BOUND[points.dtype.type]
    assert d[worst] <= bound, (
        f"{name}({points[worst]!r}) = {got[worst]!r}, reference "
        f"{_reference(name, points[worst:worst + 1])[0]!r}: {d[worst]} ulp > {bound}")


def test_logaddexp_accuracy(points):
    """``max(a, b) + log1p(exp(-|a - b|))``, NumPy's formula: its error is that of rounding
    ``a - b`` and ``max(a, b)``, which no ulp bound on the result can hold where the two terms
    cancel. So: within the bound of NumPy's own ``logaddexp`` error in the same dtype,
    measured in units of the spacing at the larger of ``|max(a, b)|`` and the result."""
    a = points
    b = np.random.default_rng(1).permutation(points)
    got = elementary.apply("logaddexp", a, b)
    wide = np.float64 if a.dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):
        reference = np.logaddexp(a.astype(wide), b.astype(wide))
        numpy_own = np.logaddexp(a, b)
    assert np.array_equal(np.isnan(got), np.isnan(numpy_own))
    finite = np.isfinite(reference) & np.isfinite(numpy_own)
    assert np.array_equal(got[~finite], numpy_own[~finite], equal_nan=True)
    with np.errstate(invalid="ignore", over="ignore"):
        big = np.maximum(np.abs(np.maximum(a, b)).astype(wide), np.abs(reference))[finite]
        spacing = np.spacing(np.maximum(big, np.finfo(a.dtype).smallest_subnormal)
                             .astype(a.dtype)).astype(wide)
    ours = np.abs(got[finite].astype(wide) - reference[finite]) / spacing
    numpys = np.abs(numpy_own[finite].astype(wide) - reference[finite]) / spacing
    excess = ours - numpys
    worst = int(np.argmax(excess))
    assert excess[worst] <= BOUND[a.dtype.type], (
        a[finite][worst], b[finite][worst], got[finite][worst], ours[worst], numpys[worst])


MPMATH_FUNCTIONS = {
    "exp": lambda mp, v: mp.exp(v),
    "log": lambda mp, v: mp.log(v),
    "log1p": lambda mp, v: mp.log1p(v),
    "softplus": lambda mp, v: mp.log1p(mp.exp(v)),
    "log1p_exp_neg_abs": lambda mp, v: mp.log1p(mp.exp(-abs(v))),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY)
def test_accuracy_against_mpmath(name, dtype):
    """A second, independent reference on a smaller sample: mpmath at 60 digits, rounded once
    to the dtype (finite inputs and finite results of the function's domain)."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(7)
    info = np.finfo(dtype)
    edge = 100.0 if dtype == np.float32 else 740.0
    x = np.concatenate([rng.uniform(-edge, edge, 500),
                        np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(10.0), 500))
                        * rng.choice([-1.0, 1.0], 500),
                        -1.0 + np.exp(rng.uniform(np.log(float(info.eps)), 0.0, 200))]).astype(dtype)
    if name == "log":
        x = np.abs(x)
    if name == "log1p":
        x = x[x > -1]
    got = elementary.apply(name, x)
    with mpmath.workdps(60):
        reference = np.array([float(MPMATH_FUNCTIONS[name](mpmath, mpmath.mpf(float(v)))) for v in x])
    # (for float32, the float64 rounding of the 60-digit value is rounded again to float32
    # by ulp_distance: a double rounding, off by one ulp at worst on exact ties)
    d = ulp_distance(got, reference)
    worst = int(np.argmax(d))
    assert d[worst] <= BOUND[dtype], f"{name}({x[worst]!r}) = {got[worst]!r}, mpmath {reference[worst]!r}"


SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0, -2.0, 1e-300, 5e-324, 1e-45, 1e-8,
            -1e-8, 88.0, 89.0, -87.0, -104.0, 709.0, 710.0, -745.0, -746.0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,numpy_function", [
    ("exp", np.exp), ("log", np.log), ("log1p", np.log1p),
    ("softplus", lambda v: np.logaddexp(v.dtype.type(0), v)),
    ("log1p_exp_neg_abs", lambda v: np.log1p(np.exp(-np.abs(v))))])
def test_special_values_are_numpys(dtype, name, numpy_function):
    x = np.array(SPECIALS, dtype=dtype)
    got = elementary.apply(name, x)
    with np.errstate(all="ignore"):
        expected = numpy_function(x)
    exact = ~np.isfinite(expected) | (expected == 0) | ~np.isfinite(x) | (x == 0)
    np.testing.assert_array_equal(got[exact], expected[exact])
    signed = exact & ~np.isnan(expected)  # a nan's sign bit means nothing
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(expected[signed]))
    np.testing.assert_allclose(got[~exact], expected[~exact], rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logaddexp_special_values(dtype):
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1e30], dtype=dtype)
    a, b = (g.ravel() for g in np.meshgrid(values, values))
    got = elementary.apply("logaddexp", a, b)
    with np.errstate(all="ignore"):
        expected = np.logaddexp(a, b)
    np.testing.assert_allclose(got, expected, rtol=2 * np.finfo(dtype).eps)


def test_only_numba_code_calls_them():
    with pytest.raises(TypeError, match="numba code"):
        elementary.exp(1.0)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"),
                    reason="vector width checked on x86-64 and ARM64 only")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [*UNARY, "logaddexp"])
def test_loops_vectorise_without_libm(name, dtype):
    function = getattr(elementary, name)
    if name == "logaddexp":
        @numba.njit(**elementary.JIT_OPTIONS)
        def loop(a, b, out):
            for i in range(a.shape[0]):
                out[i] = function(a[i], b[i])
        x = np.ones(64, dtype=dtype)
        loop(x, x, x.copy())
    else:
        @numba.njit(**elementary.JIT_OPTIONS)
        def loop(a, out):
            for i in range(a.shape[0]):
                out[i] = function(a[i])
        x = np.ones(64, dtype=dtype)
        loop(x, x.copy())
    ir = "\n".join(loop.inspect_llvm().values())
    scalar = "float" if dtype == "float32" else "double"
    widths = {int(w) for w in re.findall(rf"<(\d+) x {scalar}>", ir)}
    assert widths and max(widths) >= 2, f"no <N x {scalar}> vectors in the loop's IR"
    called = set(re.findall(r"call [^@\n]*@([\w.$]+)", ir))
    libm = {c for c in called if re.search(r"(^|[._])(exp|log|expf|logf|log1p|pow)", c)}
    assert not libm, f"the loop calls {sorted(libm)}"


@pytest.mark.parametrize("name, dtype, stated", [("EXP_COEFFICIENTS64", np.float64, 0.15),
                                                 ("EXP_SUMMED_COEFFICIENTS64", np.float64, 2.97),
                                                 ("EXP_COEFFICIENTS32", np.float32, 0.34)])
def test_exp_polynomials_are_the_chebyshev_interpolants(name, dtype, stated):
    """The constants of ``exp(r)`` are derived again here: the Chebyshev interpolant of
    degree 11 or 10 (float64) or 6 (float32) of ``exp`` on ``|r| <= ln 2 / 2`` (mpmath, 50
    digits), rounded once to the dtype; and its relative error on that interval, at 50
    digits, is within the stated ulps (0.15, 2.97, 0.34; a bound 0.01 ulp above)."""
    coefficients = getattr(elementary, name)
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        half = mpmath.log(2) / 2
        poly = mpmath.chebyfit(mpmath.exp, [-half, half], len(coefficients))
        derived = [dtype(float(c)) for c in poly[::-1]]  # constant term first
        assert [dtype(c) for c in coefficients] == derived
        worst = mpmath.mpf(0)
        for i in range(801):
            r = -half + 2 * half * i / 800
            p = mpmath.mpf(0)
            for c in reversed(coefficients):
                p = p * r + mpmath.mpf(float(dtype(c)))
            worst = max(worst, abs(p / mpmath.exp(r) - 1))
    bound = (stated + 0.01) * float(np.finfo(dtype).eps) / 2
    assert float(worst) <= bound
