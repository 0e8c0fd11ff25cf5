"""Parallel numba kernels that honour :func:`anyloss.get_threads`.

:func:`parallel_kernel` compiles a function whose outer loop is a ``prange``
twice: with ``parallel=True``, launched on ``get_threads()`` of numba's threads,
and serially (``prange`` is then ``range``), run on the calling thread when one
thread is asked for, as inside a Dask chunk. The serial copy carries its own
``__qualname__`` so that numba's on-disk cache keeps the two apart.

Parallel launches take a process-wide lock: numba's ``workqueue`` threading
layer (the one left where neither OpenMP nor TBB loads) aborts the process when
two threads launch parallel kernels at once, and the lock costs nothing to a
single caller. Serial runs take no lock and run concurrently.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

import numba

from anyloss._threads import get_threads

__all__ = ["ParallelKernel", "parallel_kernel"]

_LAUNCH_LOCK = threading.Lock()


class ParallelKernel:
    """A ``prange`` kernel compiled parallel and serial; calling it picks by the thread
    setting."""

    def __init__(self, function: Callable, options: dict[str, Any]):
        self.parallel = numba.njit(parallel=True, **options)(function)
        serial = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                                    function.__defaults__, function.__closure__)
        serial.__qualname__ = function.__qualname__ + "__serial"
        serial.__doc__ = function.__doc__
        self.serial = numba.njit(parallel=False, **options)(serial)
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __call__(self, *args):
        """Run the serial copy for one thread, else the parallel one on ``get_threads()``."""
        n = min(get_threads(), numba.config.NUMBA_NUM_THREADS)
        if n == 1:
            return self.serial(*args)
        with _LAUNCH_LOCK:
            numba.set_num_threads(n)
            return self.parallel(*args)


def parallel_kernel(**options: Any) -> Callable[[Callable], ParallelKernel]:
    """Decorator: ``@parallel_kernel(cache=True, fastmath=...)`` over a ``prange`` kernel."""
    return lambda function: ParallelKernel(function, options)
