"""The conformance runner: the catalogue on any array namespace, checked against the references.

:func:`run` calls every catalogue case on every given
:class:`~anyloss.conformance.namespaces.Namespace`, for each dtype the
library has, with anyloss's fast paths on and (where anyloss has a kernel for
that loss or a building block on that library) fully off, and compares each
result with the float64 reference
evaluated on the very inputs the library saw (rounded to the dtype under
test). The :class:`Report` it returns holds one :class:`Outcome` per call and
answers the questions a reader asks: what failed, by how much, and how far
apart the libraries are on each case.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import anyloss
from anyloss import _registry
from anyloss._registry import fast_paths

from . import catalogue
from .namespaces import Namespace
from .tolerances import TOLERANCES, mismatch, relative_error

__all__ = ["Outcome", "Report", "Expected", "run", "expected", "judge", "DTYPES",
           "supported_dtypes"]

#: The dtypes the suite knows, in report order.
DTYPES = tuple(TOLERANCES)


@dataclass(frozen=True)
class Outcome:
    """One case run on one library, in one dtype, with fast paths on or off.

    ``error`` is the relative error against the reference (see
    :mod:`~anyloss.conformance.tolerances`): ``inf`` when the call raised or the
    shape, nan or inf positions differ. ``problem`` says what went wrong, empty
    when the outcome passed. ``flushes_subnormals`` records that the library
    declared it flushes subnormals, and was judged accordingly.
    """

    case: catalogue.Case
    backend: str
    dtype: str
    fast_paths: bool
    error: float
    passed: bool
    problem: str = ""
    result: np.ndarray | None = field(default=None, repr=False, compare=False)
    flushes_subnormals: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON types."""
        return {
            "loss": self.case.loss,
            "case": self.case.id,
            "backend": self.backend,
            "dtype": self.dtype,
            "fast_paths": self.fast_paths,
            "relative_error": None if not np.isfinite(self.error) else self.error,
            "passed": self.passed,
            "problem": self.problem,
        }


@dataclass
class Report:
    """Every :class:`Outcome` of a run, and the summaries drawn from them."""

    outcomes: list[Outcome]
    backends: list[str]
    dtypes: list[str]

    @property
    def failures(self) -> list[Outcome]:
        """The outcomes that did not pass."""
        return [o for o in self.outcomes if not o.passed]

    @property
    def passed(self) -> bool:
        """Whether every outcome passed."""
        return not self.failures

    def table(self) -> dict[str, dict[str, tuple[int, int, float]]]:
        """loss -> backend -> (passed, total, worst error in units of its dtype's rtol).

        Over every dtype and fast-path mode; a worst error above 1 fails.
        """
        rows: dict[str, dict[str, tuple[int, int, float]]] = {}
        for o in self.outcomes:
            passed, total, worst = rows.setdefault(o.case.loss, {}).get(o.backend, (0, 0, 0.0))
            scaled = o.error / TOLERANCES[o.dtype]
            rows[o.case.loss][o.backend] = (passed + o.passed, total + 1, max(worst, scaled))
        return rows

    def spread(self) -> list[tuple[str, str, float]]:
        """(case id, dtype, largest relative difference between two libraries), per case.

        Only outcomes with fast paths on and a result take part; the difference
        is scaled as the relative error is (by the reference, floored).
        """
        groups: dict[tuple[str, str], list[Outcome]] = {}
        for o in self.outcomes:
            if o.fast_paths and o.result is not None:
                groups.setdefault((o.case.id, o.dtype), []).append(o)
        spreads = []
        for (case_id, dtype), group in groups.items():
            worst = 0.0
            for a, b in itertools.combinations(group, 2):
                assert a.result is not None and b.result is not None  # grouped on that
                signed = a.case.signed_zeros and not is_reduced(a.case)
                flushing = a.flushes_subnormals or b.flushes_subnormals
                # a flushed result is judged against the other one, not the other way
                first, second = ((b.result, a.result) if b.flushes_subnormals
                                 else (a.result, b.result))
                worst = max(worst, relative_error(first, second, dtype, signed_zeros=signed,
                                                  flushes_subnormals=flushing))
            spreads.append((case_id, dtype, worst))
        return spreads

    def as_dict(self) -> dict[str, Any]:
        """Every outcome as plain JSON types, and the run's libraries and dtypes."""
        spreads = self.spread()
        return {
            "anyloss_version": anyloss.__version__,
            "backends": self.backends,
            "dtypes": self.dtypes,
            "tolerances": {d: {"rtol": r} for d, r in TOLERANCES.items()},
            "summary": {
                "outcomes": len(self.outcomes),
                "passed": len(self.outcomes) - len(self.failures),
                "failed": len(self.failures),
                "largest_spread": max((s for *_, s in spreads), default=0.0),
            },
            "results": [o.as_dict() for o in self.outcomes],
            "spread": [{"case": c, "dtype": d, "relative_difference": s} for c, d, s in spreads],
        }


def supported_dtypes(ns: Namespace, wanted: Sequence[str] = DTYPES) -> list[str]:
    """The dtypes of ``wanted`` that library ``ns`` offers in its namespace."""
    return [d for d in wanted if hasattr(ns.xp, d)]


def _call(ns: Namespace, case: catalogue.Case, dtype: str, fast: bool) -> np.ndarray:
    arrays = {k: ns.from_numpy(a) for k, a in case.arrays_as(np.dtype(dtype)).items()}
    mode = contextlib.nullcontext() if fast else fast_paths(enabled=False)
    with mode, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broadcast and kl_div warnings belong to the case
        result = getattr(anyloss, case.loss)(**arrays, **case.options)
        return np.asarray(ns.to_numpy(result))


@dataclass(frozen=True)
class Expected:
    """The reference's values on one case and dtype, and the magnitude of their terms."""

    value: np.ndarray
    magnitude: np.ndarray


def expected(case: catalogue.Case, dtype: str,
             references: dict[str, Callable] | None = None) -> Expected:
    """The reference on the inputs as the library sees them (rounded to ``dtype``), with the
    magnitude of each value (the same reference reducing ``|terms|``)."""
    references = catalogue.references() if references is None else references
    rounded = {
        k: a.astype(case.arrays[k].dtype) for k, a in case.arrays_as(np.dtype(dtype)).items()
    }
    func = references[case.loss]
    with np.errstate(all="ignore"):
        value = np.asarray(func(**rounded, **case.options), dtype=np.float64)
        with catalogue.absolute_terms():
            magnitude = np.asarray(func(**rounded, **case.options), dtype=np.float64)
    return Expected(value, magnitude)


def is_reduced(case: catalogue.Case) -> bool:
    """Whether the case sums or averages its terms (``'mean'``, ``'sum'``, legacy flags)."""
    if case.options.get("reduce") is False:
        return False
    return case.options.get("reduction", "mean") != "none" and case.loss != "pairwise_distance"


def judge(case: catalogue.Case, ns: Namespace, dtype: str, fast: bool,
          want: Expected) -> Outcome:
    """Call ``case`` on ``ns`` and compare the result with ``want``."""
    try:
        actual = _call(ns, case, dtype, fast)
    except Exception as exc:  # a library failing a case is a result, not a crash
        return Outcome(case, ns.name, dtype, fast, float("inf"), False,
                       f"{type(exc).__name__}: {exc}")
    signed = case.signed_zeros and not is_reduced(case)
    flushing = ns.flushes_subnormals
    problem = mismatch(actual, want.value, dtype, want.magnitude, signed, flushing)
    error = relative_error(actual, want.value, dtype, want.magnitude, signed, flushing)
    return Outcome(case, ns.name, dtype, fast, error, not problem, problem, actual, flushing)


def _modes(loss: str, backend: str) -> tuple[bool, ...]:
    """Fast paths on, and also fully off (level ``'none'``: no kernel, no building block)
    where ``backend`` has a kernel that a call of ``loss`` may use."""
    has_kernel = (backend in _registry.libraries(loss)
                  or _registry.records(library=backend, stage="block"))
    return (True, False) if has_kernel else (True,)


def _plan(namespaces: Sequence[Namespace], dtypes: Sequence[str],
          cases: Sequence[catalogue.Case], fast_path_modes: Sequence[bool]) -> Iterator[tuple]:
    for case in cases:
        for ns in namespaces:
            for dtype in supported_dtypes(ns, dtypes):
                if dtype in case.dtypes:
                    for fast in _modes(case.loss, ns.name):
                        if fast in fast_path_modes:
                            yield case, ns, dtype, fast


def run(
    namespaces: Sequence[Namespace],
    dtypes: Sequence[str] = DTYPES,
    cases: Iterable[catalogue.Case] | None = None,
    progress: Callable[[int, int], None] | None = None,
    fast_path_modes: Sequence[bool] = (True, False),
) -> Report:
    """Run ``cases`` (default: the whole catalogue) on ``namespaces`` in ``dtypes``.

    ``fast_path_modes`` selects the runs with fast paths on (``True``) and off
    (``False``, level ``'none'``); where a library has no kernel a loss may use, the
    loss only runs with them on.

    ``progress(done, total)`` is called after every call, for a progress bar.
    Nothing raises for a failing library: every failure is an :class:`Outcome`.
    """
    cases = list(catalogue.cases() if cases is None else cases)
    references = catalogue.references()
    plan = list(_plan(namespaces, dtypes, cases, fast_path_modes))
    expected_cache: dict[tuple[int, str], Expected] = {}
    outcomes = []
    for done, (case, ns, dtype, fast) in enumerate(plan, start=1):
        key = (id(case), dtype)
        if key not in expected_cache:
            expected_cache[key] = expected(case, dtype, references)
        outcomes.append(judge(case, ns, dtype, fast, expected_cache[key]))
        if progress is not None:
            progress(done, len(plan))
    return Report(outcomes, [ns.name for ns in namespaces], list(dtypes))
