"""``out += a @ b`` in one BLAS call (GEMM with ``beta = 1``), from the BLAS NumPy loaded.

``np.matmul`` always overwrites its ``out``: adding a product into an existing array
takes a temporary and a second pass over the output (``out += tmp``). Where the
output is large and the product's inner dimension small, as the weight gradient of
``linear_cross_entropy`` summed over row blocks (``grad_W += G_r.T @ x_r``, 1 GB
per block at V=128256, D=2048, with 143 rows), that pass is single-threaded and
bound by memory, while GEMM reads and writes ``C`` in the shadow of its own
arithmetic. BLAS's ``?gemm`` computes ``C = alpha op(A) op(B) + beta C``.

NumPy does not expose its BLAS. Its wheels bundle OpenBLAS built for SciPy, with
the 64-bit-integer interface under a prefixed name (``scipy_cblas_sgemm64_``),
in ``numpy.libs`` (Linux, Windows) or ``numpy/.dylibs`` (macOS): loading that
same file again returns the library already in the process, with its thread
pool. Anywhere else (NumPy built against MKL, Accelerate or a system BLAS)
:func:`add_product` runs ``np.matmul`` into a temporary of at most ``part_bytes``
and adds it, a block of rows at a time: the same numbers up to rounding, slower.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import numpy as np

__all__ = ["add_product", "gemm_name"]

#: The CBLAS GEMMs of the 64-bit-integer (ILP64) OpenBLAS that NumPy's wheels bundle.
_SYMBOLS = {np.dtype(np.float32): "scipy_cblas_sgemm64_",
            np.dtype(np.float64): "scipy_cblas_dgemm64_"}
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enumerations


@functools.cache
def _gemm(dtype: np.dtype):
    """The CBLAS GEMM of NumPy's bundled OpenBLAS for ``dtype`` (a ctypes function), or
    ``None``; looked up once."""
    symbol = _SYMBOLS.get(dtype)
    if symbol is None:
        return None
    here = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*"):
        for path in sorted(glob.glob(os.path.join(here, pattern))):
            try:
                function = getattr(ctypes.CDLL(path), symbol)
            except (OSError, AttributeError):
                continue
            real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
            index = ctypes.c_int64
            function.restype = None
            function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index,
                                 real, ctypes.c_void_p, index, ctypes.c_void_p, index,
                                 real, ctypes.c_void_p, index]
            return function
    return None


def gemm_name(dtype=np.float32) -> str | None:
    """The symbol :func:`add_product` calls for ``dtype``, or ``None`` (the fallback runs)."""
    dtype = np.dtype(dtype)
    return _SYMBOLS[dtype] if _gemm(dtype) is not None else None


def _operand(a: np.ndarray) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a 2-d array as a row-major BLAS operand:
    rows of unit stride (as it is) or columns of unit stride (a transposed view); ``None``
    for any other layout."""
    item = a.itemsize
    rows, cols = a.shape
    s0, s1 = a.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(1, cols):
        return _NO_TRANS, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(1, rows):
        return _TRANS, s1 // item
    return None


def add_product(out: np.ndarray, a: np.ndarray, b: np.ndarray, *, part_bytes: int) -> None:
    """``out += a @ b`` for 2-d arrays of one dtype, ``a`` ``(M, K)``, ``b`` ``(K, N)``,
    ``out`` a C-contiguous ``(M, N)``: one GEMM with ``beta = 1`` where NumPy's bundled
    OpenBLAS has one and the layouts suit BLAS (each operand with rows or columns of unit
    stride; transposed views are free), else ``np.matmul`` into a temporary of at most
    ``part_bytes`` (whole rows of ``out``) and an add, a block of rows at a time."""
    m, n = out.shape
    k = a.shape[1]
    if m == 0 or n == 0:
        return
    gemm = _gemm(out.dtype) if out.flags.c_contiguous and a.dtype == b.dtype == out.dtype \
        else None
    layout_a, layout_b = (_operand(a), _operand(b)) if gemm is not None else (None, None)
    if gemm is not None and layout_a is not None and layout_b is not None and k > 0:
        gemm(_ROW_MAJOR, layout_a[0], layout_b[0], m, n, k, 1.0, a.ctypes.data, layout_a[1],
             b.ctypes.data, layout_b[1], 1.0, out.ctypes.data, max(1, n))
        return
    step = max(1, min(m, part_bytes // max(1, n * out.itemsize)))
    part = np.empty((step, n), dtype=np.result_type(a, b))
    for i in range(0, m, step):
        j = min(i + step, m)
        out[i:j] += np.matmul(a[i:j], b, out=part[: j - i])
