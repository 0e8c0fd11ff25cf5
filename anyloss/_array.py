"""Array-namespace plumbing: which library an array belongs to, and what it can do.

Everything in :mod:`anyloss` that needs to know *which* array library it is
talking to asks this module. It relies on ``array_api_compat`` for the
questions and imports no array library itself; the few operations the standard
lacks (stopping a gradient, telling a traced JAX value from a concrete one)
are the registry's ``'primitive'`` kernels (:mod:`anyloss._registry`), declared
here and imported from :mod:`anyloss.backends` only once an array of that
library has been seen.

The answers that depend only on a namespace and a dtype are remembered, since
asking again costs more than many small array operations.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any, TypeAlias

import array_api_compat as _compat

from anyloss._registry import Kernel, declare, primitive

__all__ = [
    "Array",
    "namespace",
    "library_name",
    "is_eager",
    "isdtype",
    "float_dtype",
    "needs_float32_accumulation",
    "stop_gradient",
    "indexing_dtype",
    "device",
    "size",
    "numpy_scalar_results",
    "uniform",
]

#: An array of any array-API library (a NumPy, CuPy or JAX array, a torch tensor, a Dask
#: array...). The standard defines no common base class, so for a type checker this is
#: ``Any``; in a signature it says "an array", where ``Any`` would say "anything".
Array: TypeAlias = Any

declare(
    Kernel("stop_gradient", "torch", "primitive", "torch:stop_gradient", "Tensor.detach"),
    Kernel("stop_gradient", "jax", "primitive", "jax:stop_gradient", "jax.lax.stop_gradient"),
    Kernel("is_traced", "jax", "primitive", "jax:is_tracer", "isinstance(x, jax.core.Tracer)"),
)

_PYTHON_SCALARS = (bool, int, float, complex)


@functools.cache
def library_name(xp: ModuleType) -> str:
    """Short name of the array library behind namespace ``xp``.

    One of ``'numpy'``, ``'torch'``, ``'jax'``, ``'dask'``, ``'cupy'`` and
    ``'array_api_strict'``; any other namespace is named by its module name.
    Cached per namespace.
    """
    for name, test in (
        ("numpy", _compat.is_numpy_namespace),
        ("torch", _compat.is_torch_namespace),
        ("jax", _compat.is_jax_namespace),
        ("dask", _compat.is_dask_namespace),
        ("cupy", _compat.is_cupy_namespace),
        ("array_api_strict", _compat.is_array_api_strict_namespace),
    ):
        if test(xp):
            return name
    return xp.__name__


def namespace(
    func: str, arrays: Mapping[str, Any], *, optional: Collection[str] = ()
) -> ModuleType:
    """The array namespace shared by the named ``arrays`` of a call to ``func``.

    ``arrays`` maps argument names to values. The arguments named in
    ``optional`` may be ``None`` (not given), and are then skipped.

    Raises
    ------
    TypeError
        If a value is not an array (a list, a string, a Python number...), naming
        the argument, or if the arrays come from two different libraries, naming
        both.
    """
    found: dict[str, tuple[str, ModuleType]] = {}
    for name, value in arrays.items():
        if value is None and name in optional:
            continue
        known = _NAMESPACE_OF_TYPE.get(type(value))
        if known is None:
            known = _namespace_of_new_type(func, name, value)
        found.setdefault(known[0], (name, known[1]))
    if len(found) == 1:
        ((_, xp),) = found.values()
        return xp
    if not found:
        raise TypeError(f"{func}(): expected at least one array argument")
    (lib_a, (arg_a, _)), (lib_b, (arg_b, _)) = list(found.items())[:2]
    raise TypeError(
        f"{func}(): all arrays must come from one array library, but "
        f"'{arg_a}' is a {lib_a} array and '{arg_b}' is a {lib_b} array"
    )


#: type of an array -> (library name, namespace); the namespace of every library anyloss
#: meets follows from the array's type, and asking array-api-compat costs microseconds.
_NAMESPACE_OF_TYPE: dict[type, tuple[str, ModuleType]] = {}


def _namespace_of_new_type(func: str, name: str, value: Any) -> tuple[str, ModuleType]:
    """``(library name, namespace)`` of an array of a type not seen before, remembered."""
    # NumPy scalars subclass Python's numbers but carry a dtype: they are arrays.
    is_python_number = isinstance(value, _PYTHON_SCALARS) and not hasattr(value, "dtype")
    if is_python_number or not _compat.is_array_api_obj(value):
        raise TypeError(
            f"{func}(): argument '{name}' must be an array, not {type(value).__name__}"
        )
    xp = _compat.array_namespace(value)
    known = (library_name(xp), xp)
    if known[0] in _TYPE_DETERMINES_NAMESPACE:
        _NAMESPACE_OF_TYPE[type(value)] = known
    return known


#: Libraries whose arrays' namespace depends on their type alone.
_TYPE_DETERMINES_NAMESPACE = frozenset(
    {"numpy", "torch", "jax", "dask", "cupy", "array_api_strict"}
)


def is_eager(x: Any) -> bool:
    """Whether ``x`` holds concrete values that may be inspected on the host.

    False for Dask arrays and for JAX values being traced (under ``jax.jit``,
    ``jax.grad`` and friends); value checks that would force a compute or a
    host synchronisation are skipped for those.
    """
    if type(x) in _EAGER_TYPES:
        return True
    if _compat.is_jax_array(x):
        return not _primitive("is_traced", "jax")(x)
    eager = not _compat.is_lazy_array(x)
    known = _NAMESPACE_OF_TYPE.get(type(x))
    if eager and known is not None and known[0] in _ALWAYS_EAGER:
        _EAGER_TYPES.add(type(x))
    return eager


#: Libraries whose arrays are always concrete, and the array types met of them.
_ALWAYS_EAGER = frozenset({"numpy", "torch", "cupy", "array_api_strict"})
_EAGER_TYPES: set[type] = set()


def isdtype(xp: ModuleType, dtype: Any, kind: str | tuple[str, ...]) -> bool:
    """``xp.isdtype(dtype, kind)``, remembered per (namespace, dtype, kind).

    The answer never changes, and asking costs about a microsecond in NumPy
    (more than many small array operations); the losses ask several times per
    call.
    """
    key = (xp, dtype, kind)
    try:
        return _ISDTYPE[key]
    except KeyError:
        known = _ISDTYPE[key] = bool(xp.isdtype(dtype, kind))
        return known
    except TypeError:  # a library whose dtypes cannot be hashed: ask every time
        return bool(xp.isdtype(dtype, kind))


_ISDTYPE: dict[tuple, bool] = {}


def float_dtype(func: str, xp: ModuleType, *arrays: Any, complex_ok: bool = False):
    """The floating dtype a loss of ``arrays`` computes and returns in.

    Floating arrays promote among themselves (``xp.result_type``); integer and
    boolean arrays take the floating dtype of the others, as torch does
    (float32 input with an int64 target gives float32). The answer for a
    combination of dtypes is remembered.

    Raises
    ------
    TypeError
        If no array is floating, or one is complex and ``complex_ok`` is false.
    """
    key = (xp, complex_ok, *(a.dtype for a in arrays))
    try:
        return _FLOAT_DTYPE[key]
    except (KeyError, TypeError):  # not seen yet, or dtypes that cannot be hashed
        pass
    kinds = ("real floating", "complex floating") if complex_ok else "real floating"
    floating = [a.dtype for a in arrays if isdtype(xp, a.dtype, kinds)]
    if not complex_ok:
        for a in arrays:
            if isdtype(xp, a.dtype, "complex floating"):
                raise TypeError(f"{func}(): complex inputs are not supported, got {a.dtype}")
    if not floating:
        dtypes = ", ".join(str(a.dtype) for a in arrays)
        raise TypeError(f"{func}(): expected a floating-point input, got {dtypes}")
    result = xp.result_type(*floating) if len(floating) > 1 else floating[0]
    with contextlib.suppress(TypeError):
        _FLOAT_DTYPE[key] = result
    return result


_FLOAT_DTYPE: dict[tuple, Any] = {}


def needs_float32_accumulation(dtype: Any) -> bool:
    """True for the 16-bit floats (float16, bfloat16), whose sums accumulate in float32."""
    # Keyed with the dtype's type first, so that the dtypes of two libraries are never
    # compared with each other (array-api-strict warns when asked to equal NumPy's).
    key = (type(dtype), dtype)
    try:
        return _SIXTEEN_BIT[key]
    except (KeyError, TypeError):  # not seen yet, or a dtype that cannot be hashed
        known = str(dtype).rsplit(".", 1)[-1] in ("float16", "bfloat16")
    with contextlib.suppress(TypeError):
        _SIXTEEN_BIT[key] = known
    return known


_SIXTEEN_BIT: dict[tuple, bool] = {}


def stop_gradient(x: Any) -> Any:
    """``x`` with the same values, cut from automatic differentiation.

    torch tensors are detached and JAX arrays go through
    ``jax.lax.stop_gradient``; libraries without autodiff get ``x`` back.
    """
    if _compat.is_torch_array(x):
        return _primitive("stop_gradient", "torch")(x)
    if _compat.is_jax_array(x):
        return _primitive("stop_gradient", "jax")(x)
    return x


@functools.cache
def indexing_dtype(xp: ModuleType) -> Any:
    """The integer dtype ``xp`` uses for indices (int64 for torch and NumPy).

    Read from the standard's inspection API, once per namespace.
    """
    return xp.__array_namespace_info__().default_dtypes()["indexing"]


def device(x: Any) -> Any:
    """The device ``x`` lives on, for creating arrays beside it (``xp.arange(..., device=...)``)."""
    return _compat.device(x)


def size(x: Any) -> float:
    """Number of elements of ``x``; ``nan`` where a lazy library does not know it yet."""
    return math.prod(float("nan") if n is None else n for n in x.shape)


def _primitive(function: str, library: str) -> Callable[..., Any]:
    """The registry's primitive ``function`` of ``library``, which must exist."""
    kernel = primitive(function, library)
    if kernel is None:  # pragma: no cover - declared above
        raise RuntimeError(f"no primitive {function!r} for {library}")
    return kernel


def numpy_scalar_results(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a public function: the one rule for the type of a 0-d result.

    A 0-d NumPy array that ``func`` returns (alone or in a tuple) becomes a NumPy
    scalar of its dtype, as NumPy's own reductions return, so that the type never
    depends on the path that computed it (a kernel, the written-once formula, a
    blocked evaluation) or on the input's size. Other libraries' results are
    returned as they are: 0-d arrays.
    """

    @functools.wraps(func)
    def with_scalar_results(*args: Any, **kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        if type(out) is tuple:
            return tuple(_numpy_scalar(o) for o in out)
        return _numpy_scalar(out)

    return with_scalar_results


def _numpy_scalar(x: Any) -> Any:
    cls = type(x)
    is_ndarray = _IS_NDARRAY.get(cls)
    if is_ndarray is None:
        is_ndarray = _IS_NDARRAY[cls] = cls.__module__ == "numpy" and cls.__name__ == "ndarray"
    return x[()] if is_ndarray and x.ndim == 0 else x


#: type -> whether it is NumPy's ndarray (so that this module need not import NumPy).
_IS_NDARRAY: dict[type, bool] = {}


def uniform(xp: ModuleType, shape: tuple[int, ...], bound: float, dtype: Any,
            device: Any) -> Any:
    """An array of ``xp`` of values uniform in ``[-bound, bound)``.

    The standard has no random numbers: they are drawn by NumPy's generator (NumPy
    is a dependency of anyloss) and handed to ``xp.asarray``, the one place the
    core imports NumPy.
    """
    import numpy as np

    values = np.random.default_rng().uniform(-bound, bound, shape)
    return xp.asarray(values, dtype=dtype, device=device)
