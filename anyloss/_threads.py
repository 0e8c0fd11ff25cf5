"""How many threads anyloss's own kernels use: one setting, honoured by every kernel.

The compiled CPU kernels (:mod:`anyloss.backends.numpy.compiled`) and the
thread pools of the NumPy passes split their work over :func:`get_threads`
threads. The number comes from, in this order:

1. the innermost :func:`threads` block around the call (local to the thread, like
   :func:`anyloss.fast_paths`);
2. the process-wide :func:`set_threads`;
3. the environment variable ``ANYLOSS_NUM_THREADS`` (read at each call, parsed again
   only when it changes);
4. the CPUs this process may run on (``os.sched_getaffinity`` where the
   platform has it, else ``os.cpu_count()``; counted once, when first needed).

The libraries anyloss hands calls to (torch's, JAX's, BLAS) keep their own
settings (``torch.set_num_threads``, ``XLA_FLAGS``, threadpoolctl).
A Dask chunk runs with one thread: the scheduler already runs chunks on
every core, so threads inside a chunk would only stack on its threads.

>>> import anyloss
>>> with anyloss.threads(1):
...     anyloss.get_threads()
1
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["ENVIRONMENT_VARIABLE", "get_threads", "set_threads", "single_threaded", "threads"]

_F = TypeVar("_F", bound=Callable)

#: The environment variable that sets the default number of kernel threads.
ENVIRONMENT_VARIABLE = "ANYLOSS_NUM_THREADS"

class _Here(threading.local):
    """The innermost ``threads`` block's count, per thread: ``None`` outside every block.
    A class default rather than ``getattr(local, "count", None)``, which raises and
    catches inside (0.4 us on every kernel call); a ``threading.local``, as the fast-path
    switch's (torch.compile traces it)."""

    count: int | None = None


_here = _Here()
_process: int | None = None
#: ``(ANYLOSS_NUM_THREADS's raw value, the count it gave)`` from the last call that read it.
_from_environment: tuple[str | None, int] | None = None


def _as_count(n: object, source: str) -> int:
    """``n`` as a positive int (a string is parsed: it comes from the environment)."""
    if isinstance(n, str):
        try:
            n = int(n.strip())
        except ValueError:
            raise ValueError(f"{source} must be a positive integer, got {n!r}") from None
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{source} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{source} must be a positive integer, got {n}")
    return n


@functools.cache
def _available_cpus() -> int:
    """The CPUs this process may run on, counted once (a system call each time cost 1 us
    on every kernel call)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def _default() -> int:
    global _from_environment
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if _from_environment is not None and _from_environment[0] == value:
        return _from_environment[1]
    if value is None or not value.strip():
        count = _available_cpus()
    else:
        count = _as_count(value, ENVIRONMENT_VARIABLE)
    _from_environment = (value, count)
    return count


def get_threads() -> int:
    """The number of threads anyloss's kernels use for a call made here and now."""
    local = _here.count
    if local is not None:
        return local
    if _process is not None:
        return _process
    return _default()


def set_threads(n: int | None) -> None:
    """Set the number of kernel threads for the whole process; ``None`` restores the default
    (``ANYLOSS_NUM_THREADS``, else every CPU this process may use)."""
    global _process
    _process = None if n is None else _as_count(n, "the number of threads")


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run anyloss's kernels with ``n`` threads inside the block (local to the thread)."""
    count = _as_count(n, "the number of threads")
    outer = _here.count
    _here.count = count
    try:
        yield
    finally:
        _here.count = outer


def single_threaded(function: _F) -> _F:
    """``function`` run under ``threads(1)``: for the per-chunk functions of a scheduler that
    already runs one chunk per core (Dask)."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        with threads(1):
            return function(*args, **kwargs)

    return run  # type: ignore[return-value]
