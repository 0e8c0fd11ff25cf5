"""Mutant namespaces: array-api-strict with one function broken, the way real libraries broke.

The suite's promise to array-library authors is that ``anyloss conformance
--namespace mylib`` catches a subtly wrong library. These mutants measure that
promise: each is array-api-strict with one function replaced (through
:func:`~anyloss.conformance.wrapped.wrap_namespace`) by a plausible, wrong
version: lost precision, nan or inf handled wrongly, subnormals flushed to zero,
an off-by-one at an edge, an ignored keyword. Importing this module registers
every mutant as ``anyloss.conformance.mutants.<name>``, so that

    anyloss conformance --namespace anyloss.conformance.mutants.log1p_naive --blame

runs the suite on it (and names ``log1p``). ``tests/test_mutants.py`` requires the
suite to fail on every mutant of :data:`MUTANTS` and the blame to name its function.

:data:`UNDETECTABLE` lists mutants that no loss can detect, with the reason:
they are documented, not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_strict as _xp
import numpy as np

from .wrapped import wrap_namespace

__all__ = ["Mutant", "MUTANTS", "UNDETECTABLE", "namespace_name"]


@dataclass(frozen=True)
class Mutant:
    """One broken function.

    Attributes
    ----------
    name
        The mutant's module name under this package.
    function
        The array API function it breaks (the one blame must name).
    fault
        How it is broken, and where real libraries have broken it so.
    override
        The broken function, on array-api-strict arrays.
    dtypes
        The dtypes its test runs in (float64 unless the fault only shows lower).
    losses
        The losses its test runs (a representative subset; the whole suite catches it too).
    """

    name: str
    function: str
    fault: str
    override: Callable[..., Any]
    dtypes: tuple[str, ...] = ("float64",)
    losses: tuple[str, ...] = ()


def namespace_name(mutant: Mutant) -> str:
    """The importable module name of ``mutant``'s namespace."""
    return f"{__name__}.{mutant.name}"


def _float32(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` evaluated in float32 and cast back: half the digits of a float64 result."""

    def low(*args: Any) -> Any:
        arrays = [a for a in args if hasattr(a, "dtype")]
        dtype = _xp.result_type(*arrays) if arrays else _xp.float64
        cast = [_xp.astype(a, _xp.float32) if hasattr(a, "dtype") else a for a in args]
        return _xp.astype(func(*cast), dtype)

    return low


def _flush_subnormals(x: Any) -> Any:
    """``x`` with every subnormal set to a zero of its sign (flush-to-zero, FTZ/DAZ)."""
    tiny = _xp.finfo(x.dtype).smallest_normal
    return _xp.where(_xp.abs(x) < tiny, x * 0.0, x)


def _log1p_naive(x: Any) -> Any:
    return _xp.log(1.0 + x)


def _expm1_naive(x: Any) -> Any:
    return _xp.exp(x) - 1.0


def _logaddexp_naive(x1: Any, x2: Any) -> Any:
    x1, x2 = _broadcast_pair(x1, x2)
    return _xp.log(_xp.exp(x1) + _xp.exp(x2))


def _exp_flushing(x: Any) -> Any:
    return _flush_subnormals(_xp.exp(x))


def _log_flushing(x: Any) -> Any:
    return _xp.log(_flush_subnormals(x))


def _maximum_fmax(x1: Any, x2: Any) -> Any:
    x1, x2 = _broadcast_pair(x1, x2)
    return _xp.where(_xp.isnan(x1), x2, _xp.where(_xp.isnan(x2), x1, _xp.maximum(x1, x2)))


def _minimum_fmin(x1: Any, x2: Any) -> Any:
    x1, x2 = _broadcast_pair(x1, x2)
    return _xp.where(_xp.isnan(x1), x2, _xp.where(_xp.isnan(x2), x1, _xp.minimum(x1, x2)))


def _broadcast_pair(x1: Any, x2: Any) -> tuple[Any, Any]:
    like = x1 if hasattr(x1, "dtype") else x2
    x1 = x1 if hasattr(x1, "dtype") else _xp.asarray(x1, dtype=like.dtype)
    x2 = x2 if hasattr(x2, "dtype") else _xp.asarray(x2, dtype=like.dtype)
    return x1, x2


def _clip_float32_bounds(x: Any, /, min: Any = None, max: Any = None) -> Any:
    """Python-scalar bounds taken as float32 (the default float of many libraries)."""
    if _xp.isdtype(x.dtype, "real floating"):
        min, max = (b if b is None or hasattr(b, "dtype") else float(np.float32(b))
                    for b in (min, max))
    return _xp.clip(x, min, max)


def _where_arithmetic(condition: Any, x1: Any, x2: Any, /) -> Any:
    """``c * x1 + (1 - c) * x2``: the select of a library without a select instruction;
    an inf or nan in the branch not taken leaks (0 * inf is nan)."""
    x1, x2 = _broadcast_pair(x1, x2)
    if not _xp.isdtype(_xp.result_type(x1, x2), "real floating"):
        return _xp.where(condition, x1, x2)
    c = _xp.astype(condition, _xp.result_type(x1, x2))
    return c * x1 + (1.0 - c) * x2


def _sum_sequential(x: Any, /, *, axis: Any = None, dtype: Any = None,
                    keepdims: bool = False) -> Any:
    """A sum that adds one term at a time in the working precision (no pairwise blocks)."""
    if not _xp.isdtype(x.dtype, "real floating") or x.size == 0 or dtype is not None:
        return _xp.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)
    data = np.from_dlpack(x)
    axes = tuple(range(data.ndim)) if axis is None else (
        (axis,) if isinstance(axis, int) else tuple(axis))
    axes = tuple(a % data.ndim for a in axes) if data.ndim else ()
    moved = np.moveaxis(data, axes, tuple(range(-len(axes), 0))) if axes else data[..., None]
    flat = moved.reshape(moved.shape[:moved.ndim - max(len(axes), 1)] + (-1,))
    total = np.add.accumulate(flat, axis=-1)[..., -1]  # strictly left to right
    if keepdims:
        total = np.expand_dims(total, axes)
    return _xp.asarray(total)


def _mean_float32(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    if x.dtype != _xp.float64:
        return _xp.mean(x, axis=axis, keepdims=keepdims)
    low = _xp.mean(_xp.astype(x, _xp.float32), axis=axis, keepdims=keepdims)
    return _xp.astype(low, _xp.float64)


def _max_ignoring_keepdims(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
    return _xp.max(x, axis=axis)


def _take_off_by_one(x: Any, indices: Any, /, *, axis: Any = None) -> Any:
    """The last position along ``axis`` reads the one before it (a bound test with ``<``)."""
    n = x.shape[axis if axis is not None else 0]
    moved = _xp.where(indices == n - 1, _xp.asarray(max(n - 2, 0), dtype=indices.dtype), indices)
    return _xp.take(x, moved, axis=axis)


def _take_along_axis_off_by_one(x: Any, indices: Any, /, *, axis: int = -1) -> Any:
    n = x.shape[axis]
    moved = _xp.where(indices == n - 1, _xp.asarray(max(n - 2, 0), dtype=indices.dtype), indices)
    return _xp.take_along_axis(x, moved, axis=axis)


def _cumulative_sum_exclusive(x: Any, /, *, axis: Any = None, dtype: Any = None,
                              include_initial: bool = False) -> Any:
    """An exclusive scan where the standard asks for an inclusive one (same length)."""
    inclusive = _xp.cumulative_sum(x, axis=axis, dtype=dtype, include_initial=include_initial)
    return inclusive - (x if not include_initial else 0)


def _sqrt_fast_math(x: Any) -> Any:
    """sqrt from a reciprocal-square-root estimate with 12 correct bits (GPU fast math)."""
    exact = _xp.sqrt(x)
    bits = 2.0**-12
    return exact * (1.0 + bits * _xp.sin(exact * 1e3))


def _abs_keeps_negative_zero(x: Any) -> Any:
    """``where(x < 0, -x, x)``: abs(-0.0) stays -0.0."""
    if not _xp.isdtype(x.dtype, "real floating"):
        return _xp.abs(x)
    return _xp.where(x < 0, -x, x)


def _exp_float32(x: Any) -> Any:
    return _float32(_xp.exp)(x)


def _log_float32(x: Any) -> Any:
    return _float32(_xp.log)(x)


def _isfinite_nan_is_finite(x: Any) -> Any:
    """``x != inf and x != -inf``: nan counts as finite."""
    return (x != math.inf) & (x != -math.inf)


#: The counted mutants: each is caught by the suite and blamed on its function.
MUTANTS: tuple[Mutant, ...] = (
    Mutant("log1p_naive", "log1p",
           "log1p(x) as log(1 + x): 1 + 1e-10 keeps 7 digits of x (seen in early GPU ports)",
           _log1p_naive, losses=("binary_cross_entropy",)),
    Mutant("logaddexp_float32", "logaddexp",
           "logaddexp computed in float32 whatever the input (a speed shortcut)",
           _float32(_xp.logaddexp),
           losses=("soft_margin_loss", "binary_cross_entropy_with_logits")),
    Mutant("logaddexp_naive", "logaddexp",
           "logaddexp as log(exp(a) + exp(b)): overflows to inf past 709",
           _logaddexp_naive, losses=("soft_margin_loss",)),
    Mutant("exp_float32", "exp", "exp evaluated in float32 for float64 input",
           _exp_float32, losses=("poisson_nll_loss",)),
    Mutant("exp_flush_to_zero", "exp",
           "exp flushing subnormal results to zero (FTZ, as with -ffast-math)",
           _exp_flushing, losses=("poisson_nll_loss",)),
    Mutant("log_flush_to_zero", "log",
           "log treating subnormal inputs as zero (DAZ): log(5e-324) = -inf",
           _log_flushing, losses=("kl_div",)),
    Mutant("log_float32", "log", "log evaluated in float32 for float64 input",
           _log_float32, losses=("gaussian_nll_loss",)),
    Mutant("maximum_fmax", "maximum",
           "maximum with fmax semantics: maximum(nan, 1) = 1 (C's fmax, SSE's maxpd order)",
           _maximum_fmax, losses=("hinge_embedding_loss", "margin_ranking_loss")),
    Mutant("clip_float32_bounds", "clip",
           "clip rounding Python-scalar bounds to float32 (a default float of float32)",
           _clip_float32_bounds, losses=("huber_loss", "smooth_l1_loss")),
    Mutant("where_arithmetic", "where",
           "where as c * x1 + (1 - c) * x2: inf or nan in the branch not taken leaks",
           _where_arithmetic, losses=("ctc_loss", "cross_entropy", "kl_div")),
    Mutant("sum_sequential", "sum",
           "sum adding one term at a time in the working precision (no pairwise summation)",
           _sum_sequential, dtypes=("float32",), losses=("mse_loss", "l1_loss")),
    Mutant("mean_float32", "mean", "mean accumulating float64 input in float32",
           _mean_float32, losses=("mse_loss", "l1_loss")),
    Mutant("max_ignores_keepdims", "max", "max ignoring its keepdims keyword",
           _max_ignoring_keepdims, losses=("cross_entropy",)),
    Mutant("take_off_by_one", "take",
           "take reading position n - 2 for index n - 1 (an off-by-one bound)",
           _take_off_by_one, losses=("nll_loss", "cross_entropy", "multi_margin_loss")),
    Mutant("take_along_axis_off_by_one", "take_along_axis",
           "take_along_axis reading position n - 2 for index n - 1",
           _take_along_axis_off_by_one, losses=("nll_loss", "cross_entropy")),
    Mutant("cumulative_sum_exclusive", "cumulative_sum",
           "cumulative_sum as an exclusive scan (the sum before each element)",
           _cumulative_sum_exclusive, losses=("ctc_loss",)),
    Mutant("sqrt_fast_math", "sqrt",
           "sqrt from a 12-bit reciprocal-square-root estimate (GPU fast math)",
           _sqrt_fast_math, losses=("cosine_embedding_loss", "triplet_margin_loss")),
    Mutant("abs_keeps_negative_zero", "abs",
           "abs as where(x < 0, -x, x): abs(-0.0) is -0.0",
           _abs_keeps_negative_zero, losses=("l1_loss",)),
)

#: Mutants no loss can detect, with the reason; shipped for the record, never counted.
UNDETECTABLE: dict[str, str] = {
    "minimum_fmin": "minimum (triplet_margin_loss's swap) compares two distances, and a nan "
                    "distance from p to n makes the anchor's distance to p or n nan or inf, "
                    "so the loss is nan either way",
    "clip_nan_to_bound": "clip (huber and smooth_l1's threshold) meets a nan difference only "
                         "inside c * (d - c / 2), which is nan whatever c is",
    "expm1_naive": "anyloss's formulas never call expm1 (only Python's math.expm1, on a constant)",
    "isfinite_nan_is_finite": "isfinite only picks the shift of a max-shifted log-sum-exp; a nan "
                              "shift gives the nan that the nan row gives anyway",
}

def _clip_nan_to_bound(x: Any, /, min: Any = None, max: Any = None) -> Any:
    """clip built from fmax and fmin: nan goes to the lower bound."""
    out = _xp.clip(x, min, max)
    if not _xp.isdtype(x.dtype, "real floating") or min is None:
        return out
    return _xp.where(_xp.isnan(x), _xp.asarray(min, dtype=x.dtype), out)


_UNDETECTABLE_OVERRIDES: dict[str, tuple[str, Callable[..., Any]]] = {
    "minimum_fmin": ("minimum", _minimum_fmin),
    "clip_nan_to_bound": ("clip", _clip_nan_to_bound),
    "expm1_naive": ("expm1", _expm1_naive),
    "isfinite_nan_is_finite": ("isfinite", _isfinite_nan_is_finite),
}


def _register() -> None:
    for mutant in MUTANTS:
        wrap_namespace(_xp, namespace_name(mutant), {mutant.function: mutant.override})
    for name, (function, override) in _UNDETECTABLE_OVERRIDES.items():
        wrap_namespace(_xp, f"{__name__}.{name}", {function: override})


_register()
