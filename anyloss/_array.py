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
import sys
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import Any, TypeAlias

import array_api_compat as _compat

from anyloss._registry import Kernel, declare, primitive
from anyloss._tracing import constant_when_traced

__all__ = [
    "Array",
    "namespace",
    "library_name",
    "is_eager",
    "sizes_are_numbers",
    "isdtype",
    "float_dtype",
    "needs_float32_accumulation",
    "records_gradient",
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
    Kernel("is_traced", "torch", "primitive", "torch:is_traced",
           "torch.compiler.is_compiling(), or a tensor batched by torch.func.vmap"),
    Kernel("is_compiling", "torch", "primitive", "torch:is_compiling",
           "torch.compiler.is_compiling()"),
    Kernel("records_gradient", "torch", "primitive", "torch:records_gradient",
           "torch.is_grad_enabled() and x.requires_grad"),
    Kernel("records_gradient", "jax", "primitive", "jax:is_tracer",
           "isinstance(x, jax.core.Tracer)"),
)

_PYTHON_SCALARS = (bool, int, float, complex)


@constant_when_traced
def library_name(xp: ModuleType) -> str:
    """Short name of the array library behind namespace ``xp``.

    One of ``'numpy'``, ``'torch'``, ``'jax'``, ``'dask'``, ``'cupy'`` and
    ``'array_api_strict'``; any other namespace is named by its module name.
    Remembered per namespace.
    """
    name = _LIBRARY_OF_NAMESPACE.get(xp.__name__)
    if name is None:
        name = _LIBRARY_OF_NAMESPACE[xp.__name__] = _name_library(xp)
    return name


def _name_library(xp: ModuleType) -> str:
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


#: A namespace's module name -> its library's name.
_LIBRARY_OF_NAMESPACE: dict[str, str] = {}


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
    xp: ModuleType | None = None
    first = other = None  # (library, argument) of the first two libraries met
    seen = None  # the type of the last array looked at
    for name, value in arrays.items():
        if value is None and name in optional:
            continue
        cls = type(value)
        if cls is seen:  # the namespace of a type is known once (the common call: one type)
            continue
        seen = cls
        library = _library_of_type(cls)
        if library is None:
            library, found = _namespace_of_new_type(func, name, value)
        else:
            found = _NAMESPACE_OF_LIBRARY[library]
        if first is None:
            xp, first = found, (library, name)
        elif other is None and library != first[0]:
            other = (library, name)  # raised after every argument is known to be an array
    if xp is None or first is None:
        raise TypeError(f"{func}(): expected at least one array argument")
    if other is not None:
        raise TypeError(
            f"{func}(): all arrays must come from one array library, but "
            f"'{first[1]}' is a {first[0]} array and '{other[1]}' is a {other[0]} array"
        )
    return xp


#: type of an array -> its library's name; the namespace of every library anyloss meets
#: follows from the array's type, and asking array-api-compat costs microseconds.
_LIBRARY_OF_TYPE: dict[type, str] = {}
#: library name -> its namespace, for the libraries in _LIBRARY_OF_TYPE.
_NAMESPACE_OF_LIBRARY: dict[str, ModuleType] = {}


@constant_when_traced
def _library_of_type(cls: type) -> str | None:
    """The library name of the arrays of type ``cls``, if known.

    A torch tensor type is learnt here on first sight, since this function runs
    (not traced) under torch.compile: a process whose first anyloss call is
    compiled would otherwise trace array-api-compat's cached type tests, which
    dynamo warns about.
    """
    library = _LIBRARY_OF_TYPE.get(cls)
    if library is None:
        torch = sys.modules.get("torch")
        if torch is not None and issubclass(cls, torch.Tensor):
            _namespace_of_new_type("", "", torch.empty(0))  # torch's namespace
            library = _LIBRARY_OF_TYPE[cls] = "torch"
    return library


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
        _NAMESPACE_OF_LIBRARY[known[0]] = xp
        _LIBRARY_OF_TYPE[type(value)] = known[0]
    return known


#: Libraries whose arrays' namespace depends on their type alone.
_TYPE_DETERMINES_NAMESPACE = frozenset(
    {"numpy", "torch", "jax", "dask", "cupy", "array_api_strict"}
)


def is_eager(x: Any) -> bool:
    """Whether ``x`` holds concrete values that may be inspected on the host.

    False for Dask arrays, for JAX values being traced (under ``jax.jit``,
    ``jax.grad`` and friends), for torch tensors while ``torch.compile`` traces
    the call (a host read there would split the graph) and for tensors batched by
    ``torch.func.vmap`` (which refuses host reads); value checks that would force
    a compute or a host synchronisation are skipped for those.
    """
    library = _library_of_type(type(x))
    if library in _ALWAYS_EAGER:
        return True
    if _is_array_of(x, library, "jax", _compat.is_jax_array):
        return not _primitive("is_traced", "jax")(x)
    if _is_array_of(x, library, "torch", _compat.is_torch_array):
        return not _primitive("is_traced", "torch")(x)
    return not _compat.is_lazy_array(x)


def _is_array_of(x: Any, library: str | None, name: str,
                 test: Callable[[Any], bool]) -> bool:
    """Whether ``x``, whose type's library is ``library`` (``None``: a type not met yet),
    is an array of library ``name``. A type met before needs no array-api-compat call
    (its tests are functools caches, which torch.compile warns about while tracing)."""
    return library == name or (library is None and test(x))


def sizes_are_numbers(x: Any) -> bool:
    """Whether ``x``'s sizes are Python ints (or ``None``/``nan``) that a message may hold.

    False for a torch tensor while torch.compile traces: with ``dynamic=True`` its sizes
    are symbolic, and a message passed to a function torch.compile runs rather than
    traces must be a constant.
    """
    library = _library_of_type(type(x))
    if not _is_array_of(x, library, "torch", _compat.is_torch_array):
        return True
    return not _primitive("is_compiling", "torch")(x)


#: Libraries whose arrays are always concrete.
_ALWAYS_EAGER = frozenset({"numpy", "cupy", "array_api_strict"})


@constant_when_traced
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
    return _float_dtype_of(func, xp, tuple(a.dtype for a in arrays), complex_ok)


@constant_when_traced
def _float_dtype_of(func: str, xp: ModuleType, dtypes: tuple, complex_ok: bool) -> Any:
    """:func:`float_dtype` of arrays of ``dtypes``."""
    key = (xp, complex_ok, *dtypes)
    try:
        return _FLOAT_DTYPE[key]
    except (KeyError, TypeError):  # not seen yet, or dtypes that cannot be hashed
        pass
    kinds = ("real floating", "complex floating") if complex_ok else "real floating"
    floating = [d for d in dtypes if isdtype(xp, d, kinds)]
    if not complex_ok:
        for d in dtypes:
            if isdtype(xp, d, "complex floating"):
                raise TypeError(f"{func}(): complex inputs are not supported, got {d}")
    if not floating:
        names = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"{func}(): expected a floating-point input, got {names}")
    result = xp.result_type(*floating) if len(floating) > 1 else floating[0]
    with contextlib.suppress(TypeError):
        _FLOAT_DTYPE[key] = result
    return result


_FLOAT_DTYPE: dict[tuple, Any] = {}


@constant_when_traced
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


def records_gradient(x: Any) -> bool:
    """Whether automatic differentiation may record the operations on ``x``.

    A torch tensor that requires a gradient while grad mode is on, and any JAX
    value being traced (``jax.grad`` traces, and so may ``jit``: a formula
    that only changes gradients is then kept, at the cost of a few operations).
    False for every other array: libraries without autodiff, Python numbers.
    Formulas use it to skip the work of a gradient nothing can ask for.
    """
    library = _autodiff_library(x)
    return library is not None and bool(_primitive("records_gradient", library)(x))


def stop_gradient(x: Any) -> Any:
    """``x`` with the same values, cut from automatic differentiation.

    torch tensors are detached and JAX arrays go through
    ``jax.lax.stop_gradient``; libraries without autodiff get ``x`` back.
    """
    library = _autodiff_library(x)
    return x if library is None else _primitive("stop_gradient", library)(x)


def _autodiff_library(x: Any) -> str | None:
    """``'torch'`` or ``'jax'`` for an array of a library with autodiff, else ``None``."""
    library = _library_of_type(type(x))
    if _is_array_of(x, library, "torch", _compat.is_torch_array):
        return "torch"
    if _is_array_of(x, library, "jax", _compat.is_jax_array):
        return "jax"
    return None


@constant_when_traced
def indexing_dtype(xp: ModuleType) -> Any:
    """The integer dtype ``xp`` uses for indices (int64 for torch and NumPy).

    Read from the standard's inspection API, once per namespace.
    """
    dtype = _INDEXING_DTYPE.get(xp.__name__)
    if dtype is None:
        info = xp.__array_namespace_info__()
        dtype = _INDEXING_DTYPE[xp.__name__] = info.default_dtypes()["indexing"]
    return dtype


#: A namespace's module name -> its indexing dtype.
_INDEXING_DTYPE: dict[str, Any] = {}


def device(x: Any) -> Any:
    """The device ``x`` lives on, for creating arrays beside it (``xp.arange(..., device=...)``)."""
    return _compat.device(x)


def size(x: Any) -> float:
    """Number of elements of ``x``; ``nan`` where a lazy library does not know it yet."""
    return math.prod([float("nan") if n is None else n for n in x.shape])


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
        cls = type(out)
        if cls is tuple:
            return tuple(_numpy_scalar(o) for o in out)
        return out[()] if _is_ndarray_type(cls) and out.ndim == 0 else out  # _numpy_scalar

    return with_scalar_results


def _numpy_scalar(x: Any) -> Any:
    return x[()] if _is_ndarray_type(type(x)) and x.ndim == 0 else x


@constant_when_traced
def _is_ndarray_type(cls: type) -> bool:
    is_ndarray = _IS_NDARRAY.get(cls)
    if is_ndarray is None:
        is_ndarray = _IS_NDARRAY[cls] = cls.__module__ == "numpy" and cls.__name__ == "ndarray"
    return is_ndarray


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
