"""The kernel registry: every faster implementation anyloss has, declared once.

A :class:`Kernel` record says that library ``library`` has its own
implementation of ``function`` (a public loss, or a building block of the
written-once formulas), at which ``stage`` of a call it is tried, which
``engine`` runs it, what it ``accepts``, and where it lives (``target``, a
``"module:attribute"`` under :mod:`anyloss.backends`). Records are declared
next to the function they stand in for: the :func:`kernels` decorator on a
public loss, :func:`declare` beside a building block. This table is the only
one: the dispatcher, ``anyloss info``, the README's fast-path tables
(:func:`markdown_tables`) and the tests' parametrisation all read it (SciPy's
``xp_capabilities`` is the model).

Stages
------
``'first'``
    Tried before anyloss checks anything, with the public arguments (the
    reduction resolved). The kernel must decline any call whose result or error
    would not be anyloss's; anyloss's checked path then runs and raises its own
    error. The checks alone can cost more than a fused kernel's whole call on
    small or gather-only problems (``nll_loss`` reads N of N*C values).
``'checked'``
    Tried after the public function has validated and normalised the arguments.
``'block'``
    A building block of the generic formulas (:mod:`anyloss._ops`,
    :mod:`anyloss._reduction`, ...): the library's own kernel for one step.
``'primitive'``
    An operation the standard lacks (stopping a gradient, telling a traced JAX
    value from a concrete one). Not an optimisation: never switched off.

A kernel declines a call by returning ``NotImplemented``, and that is the only
way: the dispatcher catches no exception, so a kernel's bug or an
out-of-memory error reaches the caller instead of turning into a silent second
evaluation. A kernel that wraps a library function which raises for bad input
(torch's ``RuntimeError`` for a shape mismatch) converts exactly those errors to
a decline itself, and says so in its docstring.

The switch
----------
Fast paths have three levels, set for the process (:func:`set_fast_paths`) or
for a block of code (:func:`fast_paths`, local to the thread):

- ``'all'`` (or ``True``, the default): every kernel;
- ``'blocks'``: building blocks only, the loss kernels off;
- ``'none'`` (or ``False``): no kernel at all, only the written-once array-API
  code (and the primitives), also on NumPy and torch.

>>> import anyloss
>>> with anyloss.fast_paths(False):
...     anyloss.fast_path_level()
'none'

Backend modules are imported on first use, when an array of their library
reaches a call, so ``import anyloss`` imports no array library.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from anyloss._tracing import constant_when_traced

__all__ = [
    "STAGES",
    "LEVELS",
    "Kernel",
    "declare",
    "kernels",
    "records",
    "libraries",
    "lookup",
    "call",
    "primitive",
    "fast_paths",
    "set_fast_paths",
    "fast_paths_enabled",
    "fast_path_level",
    "markdown_tables",
    "CAPABILITIES",
    "has",
    "describe",
]

STAGES = ("first", "checked", "block", "primitive")

#: The levels of the switch, and the stages each one lets run.
LEVELS = {
    "all": frozenset(STAGES),
    "blocks": frozenset({"block", "primitive"}),
    "none": frozenset({"primitive"}),
}


@dataclass(frozen=True)
class Kernel:
    """One library's own implementation of one function, at one stage of a call.

    Attributes
    ----------
    function
        The public function (``'cross_entropy'``) or building block
        (``'log_softmax'``) it stands in for.
    library
        The library whose arrays it takes, as :func:`anyloss._array.library_name`
        names it (``'numpy'``, ``'torch'``, ``'jax'``, ``'dask'``, ...).
    stage
        One of :data:`STAGES` (see the module docstring).
    target
        ``"module:attribute"`` of the implementation under :mod:`anyloss.backends`.
    engine
        What computes it, in a few words (``'torch.nn.functional.nll_loss'``,
        ``'numba loop'``).
    accepts
        The calls it takes, in a few words; it declines every other one.
    needs
        A capability the engine needs, one of :data:`CAPABILITIES` (``'numba'``), or
        ``''`` for none.
    without
        The engine that runs when ``needs`` is missing, or ``''`` when the kernel then
        declines every call (and ``anyloss info`` leaves it out).
    """

    function: str
    library: str
    stage: str
    target: str
    engine: str
    accepts: str = "every call"
    needs: str = ""
    without: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; expected one of {STAGES}")
        if self.target.count(":") != 1:
            raise ValueError(f"target must be 'module:attribute', got {self.target!r}")
        if self.needs and self.needs not in CAPABILITIES:
            raise ValueError(f"unknown capability {self.needs!r}; expected one of "
                             f"{tuple(CAPABILITIES)}")
        if self.without and not self.needs:
            raise ValueError("a kernel with a fallback engine ('without') must name what the "
                             "main engine needs ('needs')")

    def engine_now(self) -> str | None:
        """The engine that runs this kernel in this process, or ``None`` when the kernel
        declines every call here (its capability is missing and it has no fallback)."""
        if not self.needs or has(self.needs):
            return self.engine
        return self.without or None

    def load(self) -> Callable[..., Any]:
        """The implementation, importing its backend module on first use."""
        module, attribute = self.target.split(":")
        return getattr(_backend(module), attribute)


def _backend(module: str) -> ModuleType:
    """The module ``anyloss.backends.<module>``, imported on first use.

    torch.compile may trace the first anyloss call of a process. It executes an import
    statement while tracing but cannot trace ``importlib.import_module``: so the torch
    backend is imported by a statement.
    """
    if module == "torch":
        from anyloss.backends import torch as torch_backend

        return torch_backend
    return importlib.import_module(f"anyloss.backends.{module}")


def _numba() -> tuple[bool, str]:
    from anyloss.backends.numpy import compiled

    return compiled.HAVE_NUMBA, compiled.describe()


#: Capabilities an engine may need: name -> a function giving (present, description).
CAPABILITIES: dict[str, Callable[[], tuple[bool, str]]] = {"numba": _numba}


def has(capability: str) -> bool:
    """Whether ``capability`` (a key of :data:`CAPABILITIES`) is present in this process."""
    return CAPABILITIES[capability]()[0]


def describe(capability: str) -> str:
    """What this process has of ``capability``: its version and target, or why it is missing."""
    return CAPABILITIES[capability]()[1]


#: (function, library, stage) -> record; filled by :func:`declare` as the modules load.
_KERNELS: dict[tuple[str, str, str], Kernel] = {}


def declare(*kernels: Kernel) -> None:
    """Add records to the registry; one record per (function, library, stage).

    Raises
    ------
    ValueError
        A second record for the same (function, library, stage).
    """
    for kernel in kernels:
        key = (kernel.function, kernel.library, kernel.stage)
        if key in _KERNELS and _KERNELS[key] != kernel:
            raise ValueError(f"a kernel for {key} is declared twice")
        _KERNELS[key] = kernel
        _IMPLEMENTATIONS.setdefault(kernel.target, _Implementation())
    _clear_caches()


def _clear_caches() -> None:
    """Forget the kernels looked up so far (after a declaration, or a test's monkeypatch)."""
    _TARGETS.clear()
    _TARGETS_FOR_NAMESPACE.clear()
    for holder in _IMPLEMENTATIONS.values():
        holder.function = None


F = TypeVar("F", bound=Callable[..., Any])


def kernels(*records: Kernel) -> Callable[[F], F]:
    """Decorator of a public function: declare its kernels; the function is unchanged.

    Every record must name the decorated function.
    """

    def register(func: F) -> F:
        for record in records:
            if record.function != func.__name__:
                raise ValueError(
                    f"a kernel of {record.function!r} declared on {func.__name__!r}")
        declare(*records)
        return func

    return register


def records(function: str | None = None, library: str | None = None,
            stage: str | Iterable[str] | None = None) -> list[Kernel]:
    """The declared records matching every given field, in declaration order."""
    stages = (stage,) if isinstance(stage, str) else stage
    return [k for k in _KERNELS.values()
            if (function is None or k.function == function)
            and (library is None or k.library == library)
            and (stages is None or k.stage in stages)]


def libraries(function: str, stages: Iterable[str] = ("first", "checked")) -> tuple[str, ...]:
    """The libraries with a kernel of ``function`` at one of ``stages`` (loss kernels by
    default), each once."""
    return tuple(dict.fromkeys(k.library for k in records(function, stage=tuple(stages))))


# --- dispatch -----------------------------------------------------------------------------


# A lookup is remembered as the kernel's target, by functions that torch.compile runs
# rather than traces (constant_when_traced: their result must be a constant, a string),
# which also load the implementation into the target's _Implementation. Traced code
# then reads only that object's attribute: dynamo guards a compiled graph on every
# dictionary read that misses, so that a later entry for the key recompiles it, and it
# sees no entry added while it traces.


class _Implementation:
    """The implementation of one target, loaded on its first lookup."""

    __slots__ = ("function",)

    def __init__(self) -> None:
        self.function: Callable[..., Any] | None = None


#: target -> its implementation holder, made when a record of that target is declared.
_IMPLEMENTATIONS: dict[str, _Implementation] = {}
#: (function, library, stage) -> the kernel's target, or None.
_TARGETS: dict[tuple[str, str, str], str | None] = {}
#: (function, namespace's module name, stage) -> the kernel's target, or None.
_TARGETS_FOR_NAMESPACE: dict[tuple[str, str, str], str | None] = {}
#: What :func:`_target_for` finds for a key not yet in ``_TARGETS_FOR_NAMESPACE``.
_UNKNOWN = "?"


@constant_when_traced
def _target(function: str, library: str, stage: str) -> str | None:
    """The target of ``library``'s kernel of ``function`` at ``stage``, loaded; or ``None``."""
    key = (function, library, stage)
    if key not in _TARGETS:
        kernel = _KERNELS.get(key)
        if kernel is not None:
            holder = _IMPLEMENTATIONS[kernel.target]
            if holder.function is None:
                holder.function = kernel.load()
        _TARGETS[key] = None if kernel is None else kernel.target
    return _TARGETS[key]


@constant_when_traced
def _target_for(function: str, xp: ModuleType, stage: str) -> str | None:
    """:func:`_target` for the library of namespace ``xp``, remembered per namespace (the
    lookup runs on every call of every building block)."""
    key = (function, xp.__name__, stage)
    target = _TARGETS_FOR_NAMESPACE.get(key, _UNKNOWN)
    if target is _UNKNOWN:
        from anyloss._array import library_name  # _array declares primitives: imported late

        target = _TARGETS_FOR_NAMESPACE[key] = _target(function, library_name(xp), stage)
    return target


def lookup(stage: str, function: str, xp: ModuleType) -> Callable[..., Any] | None:
    """The kernel of ``function`` at ``stage`` for namespace ``xp``, or ``None``.

    ``None`` when there is none, or when the switch's level leaves ``stage`` off.
    """
    local = _level_here.level
    if stage not in LEVELS[_level_globally if local is None else local]:
        return None
    target = _target_for(function, xp, stage)
    return None if target is None else _IMPLEMENTATIONS[target].function


def call(stage: str, function: str, xp: ModuleType, *args: Any, **kwargs: Any) -> Any:
    """The kernel's answer for these arguments, or ``NotImplemented``.

    ``NotImplemented`` when there is no kernel, when the switch leaves it off, or
    when the kernel declines; the caller then runs the written-once code.
    Exceptions are never caught here.
    """
    kernel = lookup(stage, function, xp)
    return NotImplemented if kernel is None else kernel(*args, **kwargs)


def primitive(function: str, library: str) -> Callable[..., Any] | None:
    """The ``'primitive'`` kernel of ``function`` for ``library`` (never switched off)."""
    target = _target(function, library, "primitive")
    return None if target is None else _IMPLEMENTATIONS[target].function


# --- the switch ---------------------------------------------------------------------------

_level_globally = "all"


class _LevelHere(threading.local):
    """The innermost ``fast_paths`` block's level, per thread (``None`` outside every block).

    A ``threading.local`` and not a ``ContextVar``: torch.compile traces an attribute
    read of it (and guards on its value), but not ``ContextVar.get``, which would split
    every compiled graph at each kernel lookup. The class attribute is the value of a
    thread that has not set one: reading it costs a tenth of ``getattr(local, name,
    None)``, which raises and catches AttributeError inside (0.06 against 0.4 us, on
    every call of every loss).
    """

    level: str | None = None


_level_here = _LevelHere()


def _as_level(enabled: bool | str) -> str:
    if enabled is True:
        return "all"
    if enabled is False:
        return "none"
    if isinstance(enabled, str) and enabled in LEVELS:
        return enabled
    raise ValueError(
        f"fast paths: expected True, False or one of {tuple(LEVELS)}, got {enabled!r}")


def set_fast_paths(enabled: bool | str) -> None:
    """Set the fast-path level for the whole process: ``True``/``'all'`` (default),
    ``'blocks'`` or ``False``/``'none'`` (see :mod:`anyloss._registry`)."""
    global _level_globally
    _level_globally = _as_level(enabled)


@contextlib.contextmanager
def fast_paths(enabled: bool | str = True) -> Iterator[None]:
    """Context manager: the fast-path level inside the ``with`` block only.

    >>> import anyloss, numpy as np
    >>> x, y = np.asarray([0.0, 1.0]), np.asarray([1.0, 1.0])
    >>> with anyloss.fast_paths(enabled=False):   # the written-once array-API formula
    ...     round(float(anyloss.soft_margin_loss(x, y)), 6)
    0.503204
    """
    level = _as_level(enabled)
    outer = _level_here.level
    _level_here.level = level
    try:
        yield
    finally:
        _level_here.level = outer


def fast_path_level() -> str:
    """The level in force here and now: ``'all'``, ``'blocks'`` or ``'none'``."""
    local = _level_here.level
    return _level_globally if local is None else local


def fast_paths_enabled() -> bool:
    """Whether any kernel may run here and now (the level is not ``'none'``)."""
    return fast_path_level() != "none"


# --- documentation ------------------------------------------------------------------------

#: Column order of the generated tables; libraries not listed follow in name order.
_LIBRARY_ORDER = ("torch", "jax", "numpy", "dask", "cupy", "array_api_strict")
_LIBRARY_TITLES = {"torch": "torch", "jax": "JAX", "numpy": "NumPy", "dask": "Dask",
                   "cupy": "CuPy", "array_api_strict": "array-api-strict"}


def _table(kernels: list[Kernel], label: str, describe: Callable[[Kernel], str]) -> list[str]:
    present = {k.library for k in kernels}
    columns = [lib for lib in _LIBRARY_ORDER if lib in present]
    columns += sorted(present - set(columns))
    cells: dict[str, dict[str, list[str]]] = {}
    for k in kernels:
        cells.setdefault(k.function, {}).setdefault(k.library, []).append(describe(k))
    lines = [
        "| " + " | ".join([label, *(_LIBRARY_TITLES.get(c, c) for c in columns)]) + " |",
        "| " + " | ".join(["---"] * (len(columns) + 1)) + " |",
    ]
    for function, row in cells.items():
        entries = ["; ".join(row.get(c, [])).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join([f"`{function}`", *entries]) + " |")
    return lines


def markdown_tables() -> str:
    """The README's two fast-path tables, generated from the registry.

    The first lists the loss kernels (stage, engine and what each accepts), the
    second the building blocks. ``anyloss info --markdown`` prints them; a test
    fails when the README's copy differs.
    """
    def loss_cell(k: Kernel) -> str:
        when = "first" if k.stage == "first" else "checked"
        fallback = ""
        if k.needs:
            fallback = f"; without {k.needs}: {k.without or 'declines'}"
        return f"{k.engine} ({when}; {k.accepts}{fallback})"

    losses = _table(records(stage=("first", "checked")), "function", loss_cell)
    blocks = _table(records(stage="block"), "building block",
                    lambda k: k.engine if k.accepts == "every call"
                    else f"{k.engine} ({k.accepts})")
    return "\n".join([*losses, "", *blocks]) + "\n"
