"""The tolerance model of the conformance suite, per dtype, stated once.

A result ``a`` is compared with the float64 reference ``e`` computed on the
very inputs the library saw (rounded to the dtype under test). Each reference
value comes with a *magnitude* ``m >= |e|``: the size of the terms that
produced it. For an elementwise (``'none'``) result it is ``|e|`` itself; for a
sum it is the sum of the absolute values of the summed terms, for a mean that
sum over the same divisor (the reference computes it by reducing ``|terms|``,
see :func:`anyloss.conformance.catalogue.absolute_terms`). Element by element:

1. **Special values match position by position**, judged on ``e`` rounded to
   the dtype under test: ``nan`` exactly where the reference is ``nan``, ``+inf``
   and ``-inf`` exactly where it is; where the reference is an exact zero of zero
   magnitude (nothing could cancel), ``a`` is that zero, with its sign (for an
   unreduced value: the standard leaves the sign of a zero *sum* open); where
   the reference is *subnormal*, ``a`` is nonzero with the reference's sign (a
   library that flushes it to zero fails, however small the difference).
2. **Every other value is compared relative to its magnitude**:

       |a - e| <= rtol * m + SUBNORMAL_ULPS * s

   where ``s`` is the smallest subnormal of the dtype. For an elementwise value
   this is a plain relative error (``m = |e|``), so a tiny loss such as
   ``-log(1 - 1e-10)`` is judged on its own digits, not hidden behind an
   absolute floor; for a sum it allows ``rtol`` times the sum of ``|terms|``,
   which is what a correctly rounded accumulation can guarantee when terms of
   both signs cancel (Higham, *Accuracy and Stability of Numerical Algorithms*,
   2nd ed., section 4.2: the error bound of any summation order is proportional
   to ``sum |x_i|``, not to ``|sum x_i|``). The ``SUBNORMAL_ULPS * s`` slack is a
   couple of units in the last place of the subnormal range: below ``rtol * m``
   for every normal value, it only lets a subnormal result be rounded a little
   differently, as two libraries legitimately may.

``rtol`` is far above each dtype's machine epsilon (float64: 4500 ulps) because
the libraries compute the same loss by different, all stable, formulas; the
catalogue's cases where an unstable formula shows (``log(1 + x)`` for tiny
``x``, ``exp`` overflowing in ``log(1 + exp(x))``...) differ from the reference
by far more than that, and a subnormal or flushed value is caught by rule 1.

A library known to flush subnormal numbers to zero (JAX on CPU: XLA sets the
processor's flush-to-zero and denormals-are-zero modes) declares it in its
:class:`~anyloss.conformance.namespaces.Namespace`; for it alone, rule 1 treats
the subnormal range as zero (of either sign) and rule 2's slack is
``FLUSHING_SLACK`` smallest *normal* numbers. The report says so; a namespace
given with ``--namespace`` never declares it, so a flushing ``log`` is caught.

The reported *relative error* of a result is the largest
``|a - e| / max(m, tiny)`` (``tiny``: the dtype's smallest normal number), and
``inf`` when a special value is out of place; it is at most ``rtol`` for a
passing result (except in the subnormal range).

The tests' element-by-element comparisons with torch (``tests/helpers.py``)
use :func:`tolerance`: the same ``rtol`` and a small absolute floor, which
there only stands for the difference of two libraries' roundings near zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOLERANCES", "TEST_ATOL", "SUBNORMAL_ULPS", "FLUSHING_SLACK", "tolerance",
           "relative_error", "within", "mismatch"]

#: dtype name -> relative tolerance ``rtol``.
TOLERANCES: dict[str, float] = {
    "float64": 1e-9,
    "float32": 2e-5,
    "float16": 2e-2,
}

#: dtype name -> the absolute floor of the tests' ``assert_allclose`` comparisons (not the
#: suite's: the suite scales every absolute allowance to the magnitude of the terms).
TEST_ATOL: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-6,
    "float16": 2e-3,
}

#: Units of the smallest subnormal allowed on top of ``rtol * m``.
SUBNORMAL_ULPS = 2

#: For a library that declares it flushes subnormals to zero (inputs and results, as
#: XLA on CPU does), the slack is this many smallest *normal* numbers instead: a flushed
#: input ``y`` loses a term such as ``y log y``, up to ``|log tiny| * tiny`` (708 smallest
#: normals in float64, 87 in float32), or that times a modest factor.
FLUSHING_SLACK = 1000


def tolerance(dtype: str) -> dict[str, float]:
    """``{'rtol': ..., 'atol': ...}`` for ``dtype`` (a name such as ``'float32'``), for the
    tests' ``numpy.testing.assert_allclose`` comparisons."""
    return {"rtol": TOLERANCES[dtype], "atol": TEST_ATOL[dtype]}


def _as_float64(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _magnitude(expected: np.ndarray, magnitude: np.ndarray | None) -> np.ndarray:
    """The magnitude of each reference value: ``|e|``, or the reported one where larger."""
    own = np.abs(expected)
    if magnitude is None:
        return own
    reported = np.abs(_as_float64(magnitude))
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(reported), own, np.fmax(own, reported))


def mismatch(actual: np.ndarray, expected: np.ndarray, dtype: str,
             magnitude: np.ndarray | None = None, signed_zeros: bool = True,
             flushes_subnormals: bool = False) -> str:
    """What is wrong with ``actual``, in a few words; empty when it passes.

    ``expected`` and ``magnitude`` are float64 (the reference and the size of its terms);
    ``dtype`` names the dtype the library computed in. ``signed_zeros=False`` (for
    reduced values) leaves the sign of an exact zero unjudged. ``flushes_subnormals``
    (declared by a library known to flush them, see :data:`FLUSHING_SLACK`) judges the
    subnormal range in units of the smallest normal number.
    """
    actual, expected = _as_float64(actual), _as_float64(expected)
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    if flushes_subnormals:
        return _value_mismatch(actual, expected, dtype, magnitude, flushing=True) if not (
            special := _special_mismatch(actual, expected, dtype, magnitude, signed_zeros,
                                         flushing=True)) else special
    return (_special_mismatch(actual, expected, dtype, magnitude, signed_zeros)
            or _value_mismatch(actual, expected, dtype, magnitude))


def _rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` rounded to ``dtype`` (overflowing to inf, underflowing to subnormals or 0)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return values.astype(dtype).astype(np.float64)


def _exact_zeros(expected: np.ndarray, dtype: str, magnitude: np.ndarray | None) -> np.ndarray:
    """Where the reference is a zero that no cancellation produced (its magnitude is 0 too)."""
    size = _rounded(_magnitude(expected, magnitude), dtype)
    return (_rounded(expected, dtype) == 0) & (size == 0)


def _special_mismatch(actual: np.ndarray, expected: np.ndarray, dtype: str,
                      magnitude: np.ndarray | None, signed_zeros: bool = True,
                      flushing: bool = False) -> str:
    """Rule 1: nan, +-inf, exact signed zeros and subnormals in the reference's places."""
    rounded = _rounded(expected, dtype)
    if flushing:  # what the reference is once a flushing library has flushed it
        rounded = np.where(np.abs(rounded) < np.finfo(dtype).tiny, np.copysign(0.0, rounded),
                           rounded)
    checks = (
        ("nan", np.isnan(rounded), np.isnan(actual)),
        ("+inf", rounded == np.inf, actual == np.inf),
        ("-inf", rounded == -np.inf, actual == -np.inf),
    )
    for name, want, got in checks:
        if not np.array_equal(want, got):
            return _first_difference(name, want, got, actual, expected)
    exact_zero = _exact_zeros(expected, dtype, magnitude)
    signed_zeros = signed_zeros and not flushing  # a flushed value keeps no reliable sign
    wrong_sign = np.signbit(actual) != np.signbit(rounded) if signed_zeros else False
    wrong_zero = exact_zero & ((actual != 0) | wrong_sign)
    if wrong_zero.any():
        return _at(wrong_zero, actual, expected,
                   "an exact zero of that sign" if signed_zeros else "an exact zero")
    subnormal = (rounded != 0) & (np.abs(rounded) < np.finfo(dtype).tiny)
    flushed = subnormal & ((actual == 0) | (np.signbit(actual) != np.signbit(rounded)))
    if flushed.any():
        return _at(flushed, actual, expected, "a subnormal value of that sign")
    return ""


def _value_mismatch(actual: np.ndarray, expected: np.ndarray, dtype: str,
                    magnitude: np.ndarray | None, flushing: bool = False) -> str:
    """Rule 2: every finite value within ``rtol`` of its magnitude (plus the subnormal slack)."""
    info = np.finfo(dtype)
    size = _magnitude(expected, magnitude)
    finite = np.isfinite(_rounded(expected, dtype)) & ~_exact_zeros(expected, dtype, magnitude)
    unit = FLUSHING_SLACK * info.tiny if flushing else SUBNORMAL_ULPS * info.smallest_subnormal
    allowed = TOLERANCES[dtype] * size + unit
    with np.errstate(invalid="ignore", over="ignore"):
        outside = finite & ~(np.abs(actual - expected) <= allowed)
    if outside.any():
        with np.errstate(invalid="ignore", over="ignore"):
            excess = np.where(outside, np.abs(actual - expected) / allowed, 0.0)
        worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), excess.shape))
        return _describe(worst, actual, expected, f"magnitude of the terms {size[worst]:.3g}")
    return ""


def _first_difference(name: str, want: np.ndarray, got: np.ndarray, actual: np.ndarray,
                      expected: np.ndarray) -> str:
    return _at(want != got, actual, expected, f"{name} exactly where the reference has it "
               f"({int(got.sum())} places, expected {int(want.sum())})")


def _at(where: np.ndarray, actual: np.ndarray, expected: np.ndarray, wanted: str) -> str:
    first = tuple(int(i) for i in np.argwhere(where)[0]) if where.ndim else ()
    return _describe(first, actual, expected, f"wanted {wanted}")


def _describe(index: tuple, actual: np.ndarray, expected: np.ndarray, note: str) -> str:
    where = f" (element {list(index)})" if index else ""
    return f"got {float(actual[index])!r}, expected {float(expected[index])!r}{where}; {note}"


def within(actual: np.ndarray, expected: np.ndarray, dtype: str,
           magnitude: np.ndarray | None = None, signed_zeros: bool = True,
           flushes_subnormals: bool = False) -> bool:
    """Whether ``actual`` passes against ``expected`` under the model of this module."""
    return not mismatch(actual, expected, dtype, magnitude, signed_zeros, flushes_subnormals)


def relative_error(actual: np.ndarray, expected: np.ndarray, dtype: str,
                   magnitude: np.ndarray | None = None, signed_zeros: bool = True,
                   flushes_subnormals: bool = False) -> float:
    """The largest ``|a - e| / max(m, tiny)`` (see the module docstring); ``inf`` on a shape
    mismatch or a special value (nan, inf, exact zero, subnormal) out of place."""
    actual, expected = _as_float64(actual), _as_float64(expected)
    if actual.shape != expected.shape:
        return float("inf")
    if _special_mismatch(actual, expected, dtype, magnitude, signed_zeros,
                         flushing=flushes_subnormals):
        return float("inf")
    size = _magnitude(expected, magnitude)
    finite = np.isfinite(expected) & np.isfinite(actual)
    if not finite.any():
        return 0.0
    scale = np.maximum(size[finite], np.finfo(dtype).tiny)
    return float(np.max(np.abs(actual[finite] - expected[finite]) / scale))
