"""The compiled (numba) kernels of the NumPy backend, one module per subject.

- :mod:`.ctc`: CTC's forward pass (rescaled probability space, with a log-space
  fallback) and its alpha-beta gradient, one sample per thread;
- :mod:`.cross_entropy`: the float32 row loop of the cross-entropy pass, with a
  polynomial ``exp`` that LLVM vectorises;
- :mod:`.class_losses`: one loop per call for ``nll_loss`` and the margin losses
  over classes.

numba is optional: :data:`HAVE_NUMBA` says whether it is installed, and it is
the one switch of every compiled engine (the tests set it to run the NumPy
engines too). The modules import numba, so they are loaded through :func:`load`,
only when a kernel is about to run; numba compiles each kernel on its first
call, or loads it from its on-disk cache.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

__all__ = ["HAVE_NUMBA", "load"]

#: Whether numba is installed (read at call time by the engines, so tests may change it).
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


@functools.cache
def load(subject: str) -> ModuleType:
    """The kernel module of ``subject`` (``'ctc'``, ``'cross_entropy'``, ``'class_losses'``)."""
    return importlib.import_module(f"{__name__}.{subject}")
