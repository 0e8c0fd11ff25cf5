"""The array libraries the conformance suite and the tests run on.

A :class:`Namespace` pairs an array API namespace with the two conversions the
suite needs: NumPy data in (``from_numpy``) and results out (``to_numpy``).
:func:`available` lists the installed ones; a library that is missing (or, for
CuPy, has no GPU) is simply absent, with the reason in :func:`unavailable`.

The ``torch`` namespace puts its tensors on the device named by the environment
variable ``ANYLOSS_TORCH_DEVICE`` (default ``cpu``; e.g. ``cuda``), so that the
suite and the tests check torch on a GPU with no other change; a device torch
cannot use makes the namespace unavailable, with torch's reason.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["Namespace", "NAMES", "get", "available", "unavailable", "torch_device"]

#: Every library the suite knows how to drive, in the order tables list them.
NAMES = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")

#: Chunk size of the Dask arrays the suite builds: small, so that every
#: reduction really spans several chunks.
DASK_CHUNK = 3


@dataclass(frozen=True)
class Namespace:
    """An array library as the suite drives it.

    Attributes
    ----------
    name
        Short name, one of :data:`NAMES` (or a module name for a user's library).
    xp
        The array API namespace.
    from_numpy
        Turns a NumPy array into an array of this library (same dtype).
    to_numpy
        Turns an array of this library into a NumPy array, computing it if lazy.
    flushes_subnormals
        The library is known to flush subnormal numbers to zero (inputs and results,
        FTZ/DAZ), as JAX does on CPU: the suite then measures its results in units of the
        smallest *normal* number instead of the smallest subnormal, and says so in the
        report. A user's namespace never declares it.
    """

    name: str
    xp: ModuleType
    from_numpy: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    flushes_subnormals: bool = False

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def _numpy() -> Namespace:
    import array_api_compat.numpy as xp

    return Namespace("numpy", xp, np.asarray, np.asarray)


def _array_api_strict() -> Namespace:
    import array_api_strict as xp

    return Namespace("array_api_strict", xp, xp.asarray, lambda x: np.from_dlpack(x).copy())


#: The environment variable that names the device of the ``torch`` namespace's tensors.
TORCH_DEVICE_VARIABLE = "ANYLOSS_TORCH_DEVICE"


def torch_device() -> str:
    """The device of the ``torch`` namespace's tensors: ``$ANYLOSS_TORCH_DEVICE``, else ``cpu``."""
    return os.environ.get(TORCH_DEVICE_VARIABLE) or "cpu"


def _torch() -> Namespace:
    import array_api_compat.torch as xp
    import torch

    device = torch.device(torch_device())
    torch.empty(0, device=device)  # raises for a device torch cannot use here
    return Namespace(
        "torch",
        xp,
        lambda a: torch.from_numpy(np.array(a, copy=True)).to(device),
        lambda x: x.detach().cpu().numpy(),
    )


def _jax() -> Namespace:
    import jax

    # float64 parity needs 64-bit JAX; the flag is global to the process.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as xp

    # XLA's CPU backend flushes subnormals to zero (jnp.log(5e-324) is -inf).
    return Namespace("jax", xp, xp.asarray, np.asarray, flushes_subnormals=True)


#: Arrays larger than this many elements (the catalogue's large reductions) are split
#: into about :data:`DASK_LARGE_CHUNKS` chunks along their first axis instead.
DASK_SMALL = 4096
DASK_LARGE_CHUNKS = 8


def _dask_chunks(a: np.ndarray) -> Any:
    """:data:`DASK_CHUNK` along every axis; a few chunks in all for a large array."""
    if a.size <= DASK_SMALL or a.ndim == 0:
        return DASK_CHUNK
    return (max(DASK_CHUNK, -(-a.shape[0] // DASK_LARGE_CHUNKS)), *a.shape[1:])


def _dask() -> Namespace:
    import array_api_compat.dask.array as xp
    import dask.array as da

    return Namespace(
        "dask",
        xp,
        lambda a: da.from_array(np.asarray(a), chunks=_dask_chunks(np.asarray(a))),
        lambda x: np.asarray(x.compute()),
    )


def _cupy() -> Namespace:
    import array_api_compat.cupy as xp
    import cupy

    cupy.cuda.runtime.getDeviceCount()  # raises without a usable GPU
    return Namespace("cupy", xp, cupy.asarray, cupy.asnumpy)


_FACTORIES = {
    "numpy": _numpy,
    "array_api_strict": _array_api_strict,
    "torch": _torch,
    "jax": _jax,
    "dask": _dask,
    "cupy": _cupy,
}

_cache: dict[str, Namespace | str] = {}


def _load(name: str) -> Namespace | str:
    if name not in _cache:
        try:
            _cache[name] = _FACTORIES[name]()
        except KeyError:
            raise ValueError(
                f"unknown array library {name!r}; known: {', '.join(NAMES)}") from None
        except Exception as exc:  # ImportError, or CuPy without a GPU
            _cache[name] = f"{type(exc).__name__}: {exc}"
    return _cache[name]


def get(name: str) -> Namespace:
    """The :class:`Namespace` called ``name``.

    Raises
    ------
    ValueError
        For a name not in :data:`NAMES`.
    ImportError
        When the library is not usable here, with the reason.
    """
    loaded = _load(name)
    if isinstance(loaded, str):
        raise ImportError(f"{name} is not available: {loaded}")
    return loaded


def available() -> list[Namespace]:
    """The installed, usable libraries, in :data:`NAMES` order."""
    return [ns for ns in map(_load, NAMES) if isinstance(ns, Namespace)]


def unavailable() -> dict[str, str]:
    """Library name to the reason it cannot be used here."""
    return {name: r for name in NAMES if isinstance(r := _load(name), str)}


def module_namespace(module: str) -> Namespace:
    """A :class:`Namespace` for any importable array API module, e.g. a user's own library.

    Data goes in with ``xp.asarray`` and comes out through DLPack.
    """
    xp = importlib.import_module(module)
    return Namespace(module, xp, xp.asarray, lambda x: np.from_dlpack(x).copy())
