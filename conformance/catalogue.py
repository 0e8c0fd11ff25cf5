"""The case catalogue: seeded inputs and options for every loss.

A :class:`Case` is one call of one loss: its array arguments as float64 (or
integer) NumPy arrays, and its other options. The same case reaches every
library through :class:`~anyloss.conformance.namespaces.Namespace`, so all of
them see identical data. Each family module registers its cases with
:func:`register_cases` and its float64 references with :func:`reference`.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "reference", "register_cases", "cases", "references", "REDUCTIONS",
           "elementwise", "nan_max", "plus", "reduce", "terms_sum", "absolute_terms", "rng"]

REDUCTIONS = ("none", "mean", "sum")

#: The family modules whose cases and references make up the catalogue.
FAMILIES = ("regression", "classification", "margin", "embedding", "probabilistic", "ctc",
            "linear", "extremes")


@dataclass(frozen=True)
class Case:
    """One call of one loss.

    Attributes
    ----------
    loss
        Name of the function, the same in ``anyloss`` and ``torch.nn.functional``.
    arrays
        The array arguments by keyword, as NumPy arrays. Floating ones are
        float64 and are cast to the dtype under test.
    options
        The other keyword arguments (reduction, margins, flags...).
    label
        What distinguishes this case from its siblings, for test ids.
    differentiable
        Names of the arrays that gradients are checked for.
    dtypes
        The floating dtypes the case is meaningful in (a case whose data
        underflows or overflows in float16 leaves it out).
    signed_zeros
        Whether the sign of an exact zero in the unreduced result is judged;
        ``False`` only for a known, reported difference of a kernel (the comment
        at the case says which).
    """

    loss: str
    arrays: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    differentiable: tuple[str, ...] = ("input",)
    dtypes: tuple[str, ...] = ("float64", "float32", "float16")
    signed_zeros: bool = True

    def __post_init__(self) -> None:
        # Generators may hand over NumPy scalars for 0-d arrays; store true arrays.
        object.__setattr__(self, "arrays", {k: np.asarray(a) for k, a in self.arrays.items()})

    @property
    def id(self) -> str:
        """The case's test id: loss, label, options and shapes, joined by dashes."""
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        shapes = "x".join(str(a.shape) for a in self.arrays.values()).replace(" ", "")
        return "-".join(p for p in (self.loss, self.label, opts, shapes) if p)

    def arrays_as(self, dtype: Any) -> dict[str, np.ndarray]:
        """The arrays with the real floating ones cast to ``dtype``, complex ones to its twin."""
        complex_dtype = np.result_type(dtype, np.complex64)
        with np.errstate(over="ignore"):  # a float64-only case cast anyway: inf is right
            return self._cast(dtype, complex_dtype)

    def _cast(self, dtype: Any, complex_dtype: Any) -> dict[str, np.ndarray]:
        return {
            k: a.astype(dtype) if np.issubdtype(a.dtype, np.floating)
            else a.astype(complex_dtype) if np.issubdtype(a.dtype, np.complexfloating)
            else a
            for k, a in self.arrays.items()
        }


_REFERENCES: dict[str, Callable[..., np.ndarray]] = {}
_CASE_GENERATORS: list[Callable[[], Iterable[Case]]] = []


def reference(loss: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register the decorated function as the float64 reference of ``loss``."""

    def register(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _REFERENCES[loss] = func
        return func

    return register


def register_cases(generator: Callable[[], Iterable[Case]]) -> Callable[[], Iterable[Case]]:
    """Register the decorated generator of cases."""
    _CASE_GENERATORS.append(generator)
    return generator


def _load_families() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__package__}.{family}")


def cases(loss: str | None = None) -> Iterator[Case]:
    """Every case of the catalogue, or those of one ``loss``, in a fixed order."""
    _load_families()
    for generator in _CASE_GENERATORS:
        for case in generator():
            if loss is None or case.loss == loss:
                yield case


def references() -> dict[str, Callable[..., np.ndarray]]:
    """Loss name to its float64 reference implementation."""
    _load_families()
    return dict(_REFERENCES)


def rng(seed: int) -> np.random.Generator:
    """The generator every case draws from: seeded, so that runs repeat."""
    return np.random.default_rng(seed)


#: Whether the references' reductions are summing the absolute values of their terms.
_absolute = False


@contextlib.contextmanager
def absolute_terms() -> Iterator[None]:
    """Within this block, :func:`reduce` and :func:`terms_sum` reduce ``|terms|``.

    A reference evaluated here returns the *magnitude* of each of its values: the
    sum of the absolute values of what its sum or mean adds up (over the same
    divisor), ``|value|`` for an unreduced value. The tolerance model
    (:mod:`~anyloss.conformance.tolerances`) scales the allowed error by it, since
    no summation can promise better than ``eps * sum |terms|`` where terms cancel.
    """
    global _absolute
    before, _absolute = _absolute, True
    try:
        yield
    finally:
        _absolute = before


def terms_sum(values: Iterable[float]) -> float:
    """The exact (``math.fsum``) sum of ``values``; of their absolute values inside
    :func:`absolute_terms`. References sum their reduced terms with it."""
    values = [abs(float(v)) if _absolute else float(v) for v in values]
    if not all(map(math.isfinite, values)):
        return sum(values)  # nan, or an infinity: what IEEE addition gives (fsum raises)
    return math.fsum(values)


def reduce(values: np.ndarray, reduction: str) -> np.ndarray:
    """Reference reduction: exact (``math.fsum``-accurate) sum and mean.

    Inside :func:`absolute_terms`, of ``|values|`` (for every reduction).
    """
    values = np.asarray(values, dtype=np.float64)
    if _absolute:
        values = np.abs(values)
    if reduction == "none":
        return values
    total = terms_sum(values.ravel().tolist())
    if reduction == "sum":
        return np.asarray(total)
    if reduction == "mean":
        return np.asarray(total / values.size if values.size else float("nan"))
    raise ValueError(f"{reduction} is not a valid value for reduction")


def plus(*terms: float) -> float:
    """``sum(terms)`` of a few Python floats; inside :func:`absolute_terms`, ``sum |terms|``:
    the magnitude of one element whose formula adds terms that may cancel."""
    # Started at -0.0, the additive identity of IEEE floats (0.0 would turn -0.0 into +0.0).
    return sum((abs(t) for t in terms), -0.0) if _absolute else sum(terms, -0.0)


def nan_max(a: float, b: float) -> float:
    """``max(a, b)``, but nan if either is nan, as torch's ``clamp`` and ``maximum`` give
    (Python's ``max(0.0, nan)`` is 0.0)."""
    return a + b if math.isnan(a) or math.isnan(b) else max(a, b)


def elementwise(func: Callable[..., float], *arrays: Any) -> np.ndarray:
    """Reference map: ``func`` of each broadcast tuple of elements, as Python numbers."""
    arrays = np.broadcast_arrays(*map(np.asarray, arrays))
    shape = arrays[0].shape
    columns = (a.ravel().tolist() for a in arrays)
    return np.fromiter(map(func, *columns), dtype=np.float64, count=math.prod(shape)).reshape(shape)
