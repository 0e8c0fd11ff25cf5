"""Blame: which array API function of a failing namespace is at fault.

For every failing outcome of a run, :func:`blame` re-runs the case with one
function at a time taken from a trusted namespace (array-api-strict, or
NumPy's through array-api-compat), the rest left as they are, by
:func:`~anyloss.conformance.wrapped.wrap_namespace`. A function whose
replacement makes the case pass is a suspect; each suspect is reported with the
number of cases it repairs and one small input, from a fixed list of probes,
on which the namespace's function and the trusted one disagree (judged by the
suite's own tolerance model). This is delta debugging with a single-function
step (Zeller and Hildebrandt, "Simplifying and Isolating Failure-Inducing
Input", IEEE TSE 28(2), 2002), over the functions instead of the input.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from . import runner
from .namespaces import Namespace
from .tolerances import mismatch
from .wrapped import wrap_namespace

__all__ = ["Suspect", "SUSPECTS", "blame", "probe"]

#: The array API functions anyloss's formulas call, tried one at a time.
SUSPECTS = (
    "log1p", "expm1", "logaddexp", "exp", "log", "maximum", "minimum", "clip", "where",
    "sum", "mean", "max", "min", "take", "take_along_axis", "cumulative_sum", "sqrt", "abs",
    "isfinite", "isnan", "square", "astype", "reshape", "concat", "stack", "full", "zeros",
    "ones", "arange", "expand_dims", "squeeze", "broadcast_to", "moveaxis", "logical_not",
    "logical_and", "logical_or", "any", "all", "argmax", "zeros_like", "ones_like",
    "full_like", "asarray",
)

#: The failing calls blame re-runs, per library, by default (the first ones).
MAX_BLAMED_FAILURES = 200

_TINY_AND_SPECIAL = [1e-10, 1e-300, 5e-324, 3e-320, -1e-10, 0.0, -0.0, 0.5, 1.0, 2.0, -2.0,
                     20.0, 40.0, 800.0, -800.0, -740.0, 1e300, math.nan, math.inf, -math.inf]


@dataclass
class Suspect:
    """A function whose trusted replacement repairs ``cases`` failing calls."""

    function: str
    cases: list[str] = field(default_factory=list)
    example: str = ""

    def line(self) -> str:
        """``log1p: 14 cases; log1p(1e-10) = 1.00000008e-10, expected 9.9999999995e-11``."""
        count = f"{len(self.cases)} case{'s' if len(self.cases) != 1 else ''}"
        return f"{self.function}: {count}" + (f"; {self.example}" if self.example else "")

    def as_dict(self) -> dict[str, Any]:
        """The suspect as plain JSON types."""
        return {"function": self.function, "cases": self.cases, "example": self.example}


def _trusted_namespace(name: str) -> ModuleType:
    if name == "numpy":
        import array_api_compat.numpy as xp

        return xp
    import array_api_strict

    return array_api_strict


def _converter(suspect: ModuleType, trusted: ModuleType) -> tuple[Callable, Callable]:
    """Functions taking values from ``suspect`` to ``trusted`` and back (arrays by DLPack,
    dtypes by name, devices dropped)."""
    dtype_names = [n for n in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                               "uint32", "uint64", "float32", "float64", "complex64",
                               "complex128") if hasattr(suspect, n) and hasattr(trusted, n)]

    def there(value: Any) -> Any:
        if hasattr(value, "__array_namespace__"):
            return trusted.asarray(np.from_dlpack(value).copy())
        if isinstance(value, (tuple, list)):
            return type(value)(map(there, value))
        for n in dtype_names:
            try:
                if value is getattr(suspect, n) or value == getattr(suspect, n):
                    return getattr(trusted, n)
            except Exception:  # dtypes of different kinds may refuse to compare
                continue
        return value

    def back(value: Any) -> Any:
        if hasattr(value, "__array_namespace__"):
            return suspect.asarray(np.from_dlpack(value).copy())
        if isinstance(value, (tuple, list)):
            return type(value)(map(back, value))
        return value

    return there, back


def _borrowed(suspect: ModuleType, trusted: ModuleType, function: str) -> Callable[..., Any]:
    """``trusted.<function>`` made to take and give ``suspect``'s arrays."""
    there, back = _converter(suspect, trusted)
    func = getattr(trusted, function)

    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop("device", None)
        return back(func(*map(there, args), **{k: there(v) for k, v in kwargs.items()}))

    return call


def _patched(ns: Namespace, trusted: ModuleType, function: str) -> Namespace:
    name = f"_anyloss_blame_{function}_{abs(hash(ns.xp.__name__))}"
    module = wrap_namespace(ns.xp, name, {function: _borrowed(ns.xp, trusted, function)})

    def from_numpy(a: np.ndarray) -> Any:
        return module._wrap(ns.from_numpy(a))

    def to_numpy(x: Any) -> np.ndarray:
        inner = x._inner_array if hasattr(x, "_inner_array") else x
        return ns.to_numpy(inner)

    return Namespace(ns.name, module, from_numpy, to_numpy, ns.flushes_subnormals)


def blame(report: runner.Report, namespaces: Sequence[Namespace], trusted: str = "array_api_strict",
          suspects: Iterable[str] = SUSPECTS,
          max_failures: int = MAX_BLAMED_FAILURES) -> dict[str, list[Suspect]]:
    """Backend name -> the functions whose trusted replacement repairs its failing calls.

    Suspects are ordered by the number of cases they repair, most first; a backend with
    failures that no single replacement repairs maps to an empty list. Only the first
    ``max_failures`` failures of each backend are re-run.
    """
    trusted_xp = _trusted_namespace(trusted)
    found: dict[str, list[Suspect]] = {}
    for ns in namespaces:
        failures = [o for o in report.failures if o.backend == ns.name][:max_failures]
        if not failures:
            continue
        suspects_here = [f for f in suspects if hasattr(ns.xp, f) and hasattr(trusted_xp, f)]
        found[ns.name] = _blame_one(ns, trusted_xp, failures, suspects_here)
    return found


def _blame_one(ns: Namespace, trusted: ModuleType, failures: list[runner.Outcome],
               suspects: list[str]) -> list[Suspect]:
    wanted: dict[tuple[int, str], runner.Expected] = {}
    result = []
    for function in suspects:
        patched = _patched(ns, trusted, function)
        repaired = []
        for o in failures:
            key = (id(o.case), o.dtype)
            if key not in wanted:
                wanted[key] = runner.expected(o.case, o.dtype)
            if runner.judge(o.case, patched, o.dtype, o.fast_paths, wanted[key]).passed:
                repaired.append(f"{o.case.id} ({o.dtype})")
        if repaired:
            result.append(Suspect(function, repaired, probe(ns.xp, trusted, function)))
    return sorted(result, key=lambda s: -len(s.cases))


def _probes(function: str, xp: ModuleType) -> Iterable[tuple[str, tuple, dict]]:
    """(text, args, kwargs) of small calls of ``function``, as NumPy data to convert."""
    values = _TINY_AND_SPECIAL
    unary = {"log1p", "expm1", "exp", "log", "sqrt", "abs", "isfinite", "isnan", "square"}
    if function in unary:
        for v in values:
            yield f"{function}({v!r})", (np.asarray(v),), {}
    elif function in {"logaddexp", "maximum", "minimum"}:
        for a, b in itertools.product(values, repeat=2):
            yield f"{function}({a!r}, {b!r})", (np.asarray(a), np.asarray(b)), {}
    elif function == "clip":
        for v, (lo, hi) in itertools.product(values, ((-0.3, 0.3), (0.0, 1.0), (-1.0, 1.0))):
            yield f"clip({v!r}, {lo!r}, {hi!r})", (np.asarray(v), lo, hi), {}
    elif function == "where":
        for a, b in itertools.product(values, repeat=2):
            yield (f"where(True, {a!r}, {b!r})", (np.asarray(True), np.asarray(a), np.asarray(b)),
                   {})
    elif function in {"sum", "mean"}:
        big = np.random.default_rng(0).uniform(0.09, 0.11, 10**6)
        yield f"{function}(uniform(0.09, 0.11, 10**6) as float32)", (big.astype(np.float32),), {}
        yield f"{function}([0.1, 0.2, 0.3])", (np.asarray([0.1, 0.2, 0.3]),), {}
    elif function in {"max", "min"}:
        grid = np.arange(6.0).reshape(2, 3)
        yield (f"{function}(arange(6.).reshape(2, 3), axis=1, keepdims=True)", (grid,),
               {"axis": 1, "keepdims": True})
        yield f"{function}([nan, 1.0])", (np.asarray([math.nan, 1.0]),), {}
    elif function in {"take", "take_along_axis"}:
        x = np.asarray([[10.0, 11.0, 12.0], [13.0, 14.0, 15.0]])
        for axis in (1, 0):
            index = np.arange(x.shape[axis])
            if function == "take_along_axis":
                index = np.stack([index, index[::-1]], axis=1 - axis)
            yield (f"{function}({x.tolist()}, {index.tolist()}, axis={axis})", (x, index),
                   {"axis": axis})
    elif function == "cumulative_sum":
        yield "cumulative_sum([1, 2, 3])", (np.asarray([1, 2, 3]),), {}
        yield "cumulative_sum([0.5, 0.25, 2.0])", (np.asarray([0.5, 0.25, 2.0]),), {}


def probe(suspect: ModuleType, trusted: ModuleType, function: str) -> str:
    """One small call on which ``suspect``'s ``function`` and ``trusted``'s disagree, as
    ``'f(x) = got, expected want'``; empty when none of the probes shows a difference."""
    for text, args, kwargs in _probes(function, suspect):
        try:
            got = _evaluate(suspect, function, args, kwargs)
            want = _evaluate(trusted, function, args, kwargs)
        except Exception:  # a probe a library refuses is no evidence
            continue
        if got.shape != want.shape:
            return f"{text} has shape {got.shape}, expected {want.shape}"
        dtype = str(want.dtype) if want.dtype.kind == "f" else "float64"
        if mismatch(got.astype(np.float64), want.astype(np.float64), dtype):
            return f"{text} = {_show(got)}, expected {_show(want)}"
    return ""


def _evaluate(xp: ModuleType, function: str, args: tuple, kwargs: dict) -> np.ndarray:
    converted = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    return np.asarray(np.from_dlpack(getattr(xp, function)(*converted, **kwargs)))


def _show(values: np.ndarray) -> str:
    if values.ndim == 0:
        return f"{values.item()!r}" if values.dtype.kind != "f" else f"{float(values):.12g}"
    return np.array2string(values, precision=12, separator=", ",
                           max_line_width=10**6).replace("\n", "")
