"""The compiled (numba) kernels of the NumPy backend, one module per subject.

- :mod:`.elementary`: ``exp``, ``log``, ``log1p``, ``softplus``, ``logaddexp``
  in float32 and float64, written so that LLVM vectorises the loops calling them
  (no libm in the hot loops, hence the same speed on AVX2, AVX-512 and NEON);
- :mod:`.parallel`: ``prange`` kernels compiled parallel and serial, launched on
  :func:`anyloss.get_threads` threads;
- :mod:`.memory`: software prefetch into L1 or L2 (``llvm.prefetch``);
- :mod:`.half`: float16 <-> float32 conversions, vectorised (NumPy's casts run one
  element at a time on many CPUs);
- :mod:`.ctc`: CTC's forward pass and gradient, one sample per thread;
- :mod:`.cross_entropy`: the cross-entropy row pass;
- :mod:`.elementwise`: one-pass kernels of the elementwise losses;
- :mod:`.class_losses`: one loop per call for ``nll_loss`` and the margin losses
  over classes.

numba is a dependency wherever it has wheels, and optional: :data:`HAVE_NUMBA`
says whether it is installed, and it is the one switch of every compiled engine
(the tests set it to run the NumPy engines too). The modules import numba, so
they are loaded through :func:`load`, only when a kernel is about to run; numba
compiles each kernel on its first call, or loads it from its on-disk cache.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

__all__ = ["HAVE_NUMBA", "WHY_NOT", "describe", "load"]


def _import_numba() -> str:
    """``''`` when numba imports, else why it does not (not installed; or installed but
    broken, e.g. built for another NumPy, which raises at import)."""
    try:
        import numba  # noqa: F401
    except Exception as error:
        return f"numba cannot be imported ({type(error).__name__}: {error})"
    return ""


#: Why the compiled engines are off in this process ('' when numba imports).
WHY_NOT = _import_numba()

#: Whether numba imports (read at call time by the engines, so tests may change it).
HAVE_NUMBA = not WHY_NOT


@functools.cache
def load(subject: str) -> ModuleType:
    """The kernel module of ``subject`` (``'ctc'``, ``'cross_entropy'``, ``'class_losses'``)."""
    return importlib.import_module(f"{__name__}.{subject}")


def describe() -> str:
    """numba's version, the CPU LLVM compiles for, and the thread count, in one line (or
    why the compiled engines are off)."""
    if not HAVE_NUMBA:
        return WHY_NOT or "numba is switched off"
    import llvmlite.binding as llvm
    import numba

    from anyloss._threads import get_threads

    target = getattr(numba.config, "CPU_NAME", None) or llvm.get_host_cpu_name()  # NUMBA_CPU_NAME
    return (f"numba {numba.__version__}, LLVM target {target}, "
            f"{min(get_threads(), numba.config.NUMBA_NUM_THREADS)} threads")  # type: ignore[attr-defined]
