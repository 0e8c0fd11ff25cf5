"""The tolerances of the conformance suite, per dtype, stated once.

A result ``a`` passes against the float64 reference ``e`` (computed on the same
inputs, rounded to the dtype under test) when, element by element,

    |a - e| <= atol + rtol * |e|

and ``nan`` appears exactly where the reference has ``nan`` (infinities must
match in sign). The reported *relative error* of a result is the largest
``|a - e| / max(|e|, atol / rtol)``: an ordinary relative error, with the
denominator floored where the reference is near zero; it is at most ``rtol``
(up to a factor 2) for a passing result.

The tests use the same numbers (``tests/conftest.py`` imports them), so the
suite and the tests cannot drift apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOLERANCES", "tolerance", "relative_error", "within"]

#: dtype name -> (rtol, atol).
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-12),
    "float32": (2e-5, 1e-6),
    "float16": (2e-2, 2e-3),
}


def tolerance(dtype: str) -> dict[str, float]:
    """``{'rtol': ..., 'atol': ...}`` for ``dtype`` (a name such as ``'float32'``)."""
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol}


def _same_specials(actual: np.ndarray, expected: np.ndarray) -> bool:
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if not np.array_equal(nan_a, nan_e):
        return False
    inf_a, inf_e = np.isinf(actual), np.isinf(expected)
    return np.array_equal(inf_a, inf_e) and np.array_equal(actual[inf_a], expected[inf_e])


def relative_error(actual: np.ndarray, expected: np.ndarray, dtype: str) -> float:
    """The largest relative error of ``actual`` (see the module docstring); inf on a shape,
    nan or inf mismatch."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape or not _same_specials(actual, expected):
        return float("inf")
    finite = np.isfinite(expected)
    if not finite.any():
        return 0.0
    rtol, atol = TOLERANCES[dtype]
    a, e = actual[finite], expected[finite]
    return float(np.max(np.abs(a - e) / np.maximum(np.abs(e), atol / rtol)))


def within(actual: np.ndarray, expected: np.ndarray, dtype: str) -> bool:
    """Whether ``actual`` passes against ``expected`` at ``dtype``'s tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape or not _same_specials(actual, expected):
        return False
    rtol, atol = TOLERANCES[dtype]
    finite = np.isfinite(expected)
    a, e = actual[finite], expected[finite]
    return bool(np.all(np.abs(a - e) <= atol + rtol * np.abs(e)))
