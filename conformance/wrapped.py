"""Build a new array API namespace by wrapping an existing one, with some functions replaced.

:func:`wrap_namespace` makes a module whose arrays are thin wrappers of the
base library's arrays and whose ``__array_namespace__`` is the new module, so
that anything resolving the namespace from its arrays (anyloss does, through
array-api-compat) calls the new module's functions. Every function delegates
to the base library unless ``overrides`` replaces it.

This is how the suite shows what it is for: :mod:`anyloss.conformance.broken`
is array-api-strict with one subtly wrong function, and ``anyloss conformance
--namespace anyloss.conformance.broken`` catches it. Library authors can use
the same tool to try a change of theirs against the suite before writing it
into their library.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["wrap_namespace"]

_FORWARDED_OPERATORS = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__",
    "__rpow__", "__matmul__", "__rmatmul__", "__neg__", "__pos__", "__abs__", "__invert__",
    "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__",
    "__rshift__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__getitem__",
)
_FORWARDED_CONVERSIONS = ("__bool__", "__float__", "__int__", "__index__", "__complex__",
                          "__dlpack__", "__dlpack_device__", "__len__")
_FORWARDED_ATTRIBUTES = ("dtype", "shape", "ndim", "size", "device")


def wrap_namespace(base: types.ModuleType, name: str,
                   overrides: dict[str, Callable[..., Any]] | None = None) -> types.ModuleType:
    """A namespace module ``name`` that wraps ``base``, with ``overrides`` replacing functions.

    An override receives and returns *base* arrays (already unwrapped), so it
    can be written with ``base``'s functions. The module is registered in
    ``sys.modules`` under ``name``, so ``importlib.import_module(name)`` finds it.
    """
    replaced = overrides or {}
    module = types.ModuleType(name, f"{base.__name__}, wrapped; replaced: {sorted(replaced)}")
    array_type = _array_class(module, base)

    def wrap(value: Any) -> Any:
        if hasattr(value, "__array_namespace__") and not isinstance(value, array_type):
            return array_type(value)
        if isinstance(value, tuple):
            return tuple(map(wrap, value))
        if isinstance(value, list):
            return list(map(wrap, value))
        return value

    def delegate(func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return wrap(func(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        call.__name__ = getattr(func, "__name__", "function")
        call.__doc__ = getattr(func, "__doc__", None)
        return call

    for attr in dir(base):
        if attr.startswith("__") and attr != "__array_namespace_info__":
            continue
        value = getattr(base, attr)
        is_function = callable(value) and not isinstance(value, type)
        if attr in replaced:
            value = replaced[attr]
            is_function = True
        setattr(module, attr, delegate(value) if is_function else value)
    vars(module).update(
        __array_api_version__=getattr(base, "__array_api_version__", "2024.12"),
        Array=array_type,
        _wrap=wrap,
    )
    sys.modules[name] = module
    return module


def _unwrap(value: Any) -> Any:
    if hasattr(value, "_inner_array"):
        return value._inner_array
    if isinstance(value, tuple):
        return tuple(map(_unwrap, value))
    if isinstance(value, list):
        return list(map(_unwrap, value))
    if isinstance(value, slice):
        return slice(_unwrap(value.start), _unwrap(value.stop), _unwrap(value.step))
    return value


def _array_class(module: types.ModuleType, base: types.ModuleType) -> type:
    """The wrapper array type of ``module``: holds a base array, answers to ``module``."""

    class Array:
        __slots__ = ("_inner_array",)
        __hash__ = None  # type: ignore[assignment]  # arrays compare elementwise

        def __init__(self, inner: Any) -> None:
            self._inner_array = inner

        def __array_namespace__(self, api_version: str | None = None) -> types.ModuleType:
            return module

        def __repr__(self) -> str:
            return f"{module.__name__}.Array({self._inner_array!r})"

        def __setitem__(self, key: Any, value: Any) -> None:
            self._inner_array[_unwrap(key)] = _unwrap(value)

        @property
        def T(self) -> Any:
            return module._wrap(self._inner_array.T)

        @property
        def mT(self) -> Any:
            return module._wrap(self._inner_array.mT)

    def operator(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any) -> Any:
            return module._wrap(getattr(self._inner_array, name)(*map(_unwrap, args)))

        method.__name__ = name
        return method

    def conversion(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self._inner_array, name)(*args, **kwargs)

        method.__name__ = name
        return method

    for name in _FORWARDED_OPERATORS:
        setattr(Array, name, operator(name))
    for name in _FORWARDED_CONVERSIONS:
        setattr(Array, name, conversion(name))
    def attribute(name: str) -> property:
        def get(self: Any) -> Any:
            return getattr(self._inner_array, name)

        return property(get)

    for name in _FORWARDED_ATTRIBUTES:
        setattr(Array, name, attribute(name))
    Array.__qualname__ = Array.__name__ = "Array"
    Array.__module__ = module.__name__
    return Array
