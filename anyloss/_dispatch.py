"""The fast-path table: which loss has a native implementation on which library.

:data:`FAST_PATHS` is the one declarative source for fast paths. The public
functions ask :func:`fast_path` for an implementation; the documentation's
support table and the test markers can read the same table (SciPy's
``xp_capabilities`` is the model). An entry names the backend module, under
:mod:`anyloss.backends`, that holds a function of the loss's name; the module
is imported only when an array of that library reaches the loss, so
``import anyloss`` imports no array library.

A backend function receives the arguments the public function has already
validated and normalised, and may return ``NotImplemented`` to decline a call
it cannot take (an option it does not support); the generic formula then runs.

:data:`NATIVE_FIRST` lists a second kind, tried *before* anyloss checks
anything, because the checks alone cost several times what a fused kernel does
on small or gather-only problems (``nll_loss`` reads N of N*C values): torch's
own functions (torch *is* the specification), and for NumPy compiled loops
(numba, :mod:`anyloss.backends.numpy_compiled`) that check the class indices as
they read them. The backend function takes the public arguments (reduction
already resolved) and declines (``NotImplemented``) anything outside the cases
where its result is anyloss's result: other devices (a CUDA kernel reports a
bad class index by a device-side assert, not an exception), other dtypes, empty
inputs, and for the NumPy loops any target value anyloss would reject. When the
kernel declines or raises, :func:`call_native_first` answers ``NotImplemented``
and the public function runs its own checks, which raise anyloss's error
(torch's wording, a ``ValueError`` where torch raises ``RuntimeError``) or
compute a case the kernel refuses (an int32 target, say).

Fast paths can be switched off, for debugging and for the conformance run::

    anyloss.set_fast_paths(False)          # for the whole process
    with anyloss.fast_paths(enabled=False):  # for a block (thread- and task-local)
        ...
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from collections.abc import Callable, Iterator
from types import MappingProxyType, ModuleType
from typing import Any

from anyloss._array import library_name

__all__ = [
    "FAST_PATHS",
    "NATIVE_FIRST",
    "fast_path",
    "call_fast_path",
    "call_native_first",
    "fast_paths",
    "set_fast_paths",
    "fast_paths_enabled",
    "backends_with_fast_path",
]

#: function name -> {library name: backend module under anyloss.backends}.
#: The backend module defines a function with the same name as the key.
FAST_PATHS: MappingProxyType = MappingProxyType(
    {
        "ctc_loss": MappingProxyType(
            {"torch": "torch", "numpy": "numpy", "jax": "jax", "dask": "dask"}
        ),
        "ctc_loss_and_grad": MappingProxyType(
            {"torch": "torch", "numpy": "numpy", "jax": "jax", "dask": "dask"}
        ),
        "cross_entropy": MappingProxyType(
            {"torch": "torch", "numpy": "numpy", "jax": "jax", "dask": "dask"}
        ),
        "cross_entropy_and_grad": MappingProxyType(
            {"torch": "torch", "numpy": "numpy", "jax": "jax", "dask": "dask"}
        ),
    }
)

#: function name -> {library name: backend module}: the kernels tried before any check.
#: The backend module defines a function named ``<function name>_native_first``.
NATIVE_FIRST: MappingProxyType = MappingProxyType(
    {
        "nll_loss": MappingProxyType({"torch": "torch", "numpy": "numpy_compiled"}),
        "cross_entropy": MappingProxyType({"torch": "torch"}),
        "multi_margin_loss": MappingProxyType({"torch": "torch", "numpy": "numpy_compiled"}),
        "multilabel_margin_loss": MappingProxyType({"torch": "torch", "numpy": "numpy_compiled"}),
    }
)

_enabled_globally = True
_enabled_here: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "anyloss_fast_paths", default=None
)


def set_fast_paths(enabled: bool) -> None:
    """Switch every fast path on or off for the whole process (default: on)."""
    global _enabled_globally
    _enabled_globally = bool(enabled)


@contextlib.contextmanager
def fast_paths(enabled: bool = True) -> Iterator[None]:
    """Context manager: fast paths on or off inside the ``with`` block only.

    >>> with anyloss.fast_paths(enabled=False):      # doctest: +SKIP
    ...     loss = anyloss.ctc_loss(...)             # the generic array-API formula
    """
    token = _enabled_here.set(bool(enabled))
    try:
        yield
    finally:
        _enabled_here.reset(token)


def fast_paths_enabled() -> bool:
    """Whether fast paths are used here and now."""
    local = _enabled_here.get()
    return _enabled_globally if local is None else local


def backends_with_fast_path(func: str) -> tuple[str, ...]:
    """The libraries that have a fast path for ``func`` (of either kind), e.g. for a
    support table."""
    libraries = dict.fromkeys(FAST_PATHS.get(func, {}))
    libraries.update(dict.fromkeys(NATIVE_FIRST.get(func, {})))
    return tuple(libraries)


def fast_path(func: str, xp: ModuleType) -> Callable[..., Any] | None:
    """The fast implementation of ``func`` for namespace ``xp``, or ``None``.

    ``None`` when fast paths are switched off or when the table has no entry;
    the backend module is imported on this first use.
    """
    return _lookup(FAST_PATHS, func, xp, func)


def _lookup(table: MappingProxyType, func: str, xp: ModuleType,
            attribute: str) -> Callable[..., Any] | None:
    if not fast_paths_enabled():
        return None
    module = table.get(func, {}).get(library_name(xp))
    if module is None:
        return None
    return _backend_function(module, attribute)


@functools.cache
def _backend_function(module: str, attribute: str) -> Callable[..., Any]:
    """``anyloss.backends.<module>.<attribute>``, imported on first use and remembered."""
    return getattr(importlib.import_module(f"anyloss.backends.{module}"), attribute)


def call_fast_path(func: str, xp: ModuleType, *args: Any, **kwargs: Any) -> Any:
    """The fast path of ``func`` for ``xp`` called with ``args``, or ``NotImplemented``.

    ``NotImplemented`` when there is none, when fast paths are off, or when the
    backend declines the call; the caller then runs its generic formula.
    """
    fast = fast_path(func, xp)
    return NotImplemented if fast is None else fast(*args, **kwargs)


def call_native_first(func: str, xp: ModuleType, *args: Any, **kwargs: Any) -> Any:
    """The kernel of ``func`` for ``xp`` tried first (see :data:`NATIVE_FIRST`), called
    with the public ``args``, or ``NotImplemented``.

    ``NotImplemented`` when there is none, when fast paths are off, when the backend
    declines, or when the native call raises: the caller then checks the arguments
    itself, so that an error is always anyloss's.
    """
    native = _lookup(NATIVE_FIRST, func, xp, f"{func}_native_first")
    if native is None:
        return NotImplemented
    try:
        return native(*args, **kwargs)
    except Exception:  # noqa: BLE001 - the caller's own checks name the problem
        return NotImplemented
