"""What the benchmarks print about the machine: CPU model, cores, SIMD level, versions.

The scripts import it as ``_machine`` (``python benchmarks/bench_x.py`` puts
``benchmarks/`` first on ``sys.path``). Nothing here imports torch or JAX: a
library's version is read from its installed metadata unless it is already
imported, so that a script's own memory figures are not changed by this line.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

#: Settings that make NumPy, torch and numba use less of the CPU than it has (to measure an
#: AVX2-only machine's code paths on an AVX-512 one); the machine line names any that is set.
NARROWING = ("NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "NUMBA_CPU_NAME",
             "NUMBA_CPU_FEATURES")

#: SIMD levels from best to worst, as NumPy's ``__cpu_features__`` names them, with
#: the name printed and the /proc/cpuinfo flag that says the same.
_LEVELS = (
    ("AVX512F", "AVX512F", "avx512f"),
    ("AVX2", "AVX2", "avx2"),
    ("AVX", "AVX", "avx"),
    ("SSE42", "SSE4.2", "sse4_2"),
    ("SSE41", "SSE4.1", "sse4_1"),
    ("SSE2", "SSE2", "sse2"),
    ("SVE", "SVE", "sve"),
    ("ASIMD", "NEON", "asimd"),
    ("NEON", "NEON", "neon"),
    ("VSX", "VSX", "vsx"),
    ("VX", "VX", "vx"),
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    return fields


def _numpy_cpu_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:  # NumPy 1.x
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def simd_level() -> str:
    """The best SIMD level of this CPU (``'AVX512F'``, ``'AVX2'``, ``'NEON'``, ``'SSE4.2'``...).

    Read from NumPy's runtime CPU detection, else from the flags of /proc/cpuinfo;
    ``'unknown'`` when neither says.
    """
    features = _numpy_cpu_features()
    for key, name, _ in _LEVELS:
        if features.get(key):
            return name
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    for _, name, flag in _LEVELS:
        if flag in flags:
            return name
    return "unknown"


def _version(name: str) -> str | None:
    module = sys.modules.get(name)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    info = _cpuinfo()
    return (info.get("model name") or info.get("Hardware") or info.get("cpu")
            or platform.processor() or platform.machine())


def numba_target() -> str | None:
    """numba's version and the CPU its LLVM compiles for (``'numba 0.68.1 for
    sapphirerapids'``), or ``None`` without numba. Imports llvmlite, not numba."""
    version = _version("numba")
    if version is None:
        return None
    try:
        import llvmlite.binding as llvm

        chosen = os.environ.get("NUMBA_CPU_NAME")  # numba compiles for this CPU instead
        if chosen and chosen != "host":
            return f"numba {version} for {chosen} (NUMBA_CPU_NAME; host {llvm.get_host_cpu_name()})"
        return f"numba {version} for {llvm.get_host_cpu_name()}"
    except Exception:  # an llvmlite that cannot tell
        return f"numba {version}"


def machine_line() -> str:
    """One line: CPU model, cores (usable / present), SIMD level (NumPy's, and the CPU numba
    compiles for), Python, NumPy, torch."""
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = cores
    core_text = f"{cores} cores" if usable == cores else f"{usable} of {cores} cores"
    parts = [f"{cpu_model()} ({platform.machine()})", core_text, f"SIMD {simd_level()}",
             f"Python {platform.python_version()}"]
    for name in ("numpy", "torch"):
        version = _version(name)
        if version is not None:
            parts.append(f"{name} {version}")
    target = numba_target()
    parts.append(target if target is not None else "no numba (NumPy engines)")
    tuned = [f"{k}={os.environ[k]}"
             for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *NARROWING)
             if k in os.environ]
    if tuned:
        parts.append("set: " + " ".join(tuned))
    return "machine: " + ", ".join(parts)


if __name__ == "__main__":
    print(machine_line())
