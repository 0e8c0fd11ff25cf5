"""``backends.numpy.blas.add_product``: ``out += a @ b`` by one BLAS GEMM with ``beta = 1``,
or by NumPy in blocks where that BLAS cannot be reached or the layout does not suit it."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from anyloss.backends.numpy import blas

LAYOUTS = ["plain", "a-transposed", "b-transposed", "both-transposed", "a-strided",
           "a-row-slice", "one-row", "inner-zero"]


def _operands(layout, dtype, rng):
    m, k, n = 9, 6, 5
    if layout == "one-row":
        m = 1
    if layout == "inner-zero":
        k = 0
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout in ("a-transposed", "both-transposed"):
        a = np.ascontiguousarray(a.T).T  # columns of unit stride: BLAS's transposed operand
    if layout in ("b-transposed", "both-transposed"):
        b = np.ascontiguousarray(b.T).T
    if layout == "a-strided":
        a = rng.standard_normal((m, 2 * k)).astype(dtype)[:, ::2]  # no unit stride: NumPy
    if layout == "a-row-slice":
        a = rng.standard_normal((m, k + 3)).astype(dtype)[:, 1:k + 1]  # leading dimension k+3
    out = rng.standard_normal((m, n)).astype(dtype)
    return out, a, b


@pytest.mark.parametrize("gemm", ["blas", "numpy"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_product_adds_the_product(monkeypatch, gemm, layout, dtype):
    """``out`` ends as ``out + a @ b``, against the product in float64 (to float32's
    rounding of each of the K products, or float64's), on both engines."""
    if gemm == "numpy":
        monkeypatch.setattr(blas, "_gemm", lambda dtype: None)
    elif blas.gemm_name(dtype) is None:
        pytest.skip("NumPy's BLAS is not reachable here: the 'numpy' case covers the fallback")
    out, a, b = _operands(layout, dtype, np.random.default_rng(3))
    expected = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    blas.add_product(out, a, b, part_bytes=2 * out.shape[1] * out.itemsize)  # 2-row parts
    assert out.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_bundled_openblas_is_found_where_numpy_ships_it():
    """With a NumPy wheel's bundled OpenBLAS on disk, its GEMMs are the ones called."""
    here = os.path.dirname(np.__file__)
    bundled = [p for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*")
               for p in glob.glob(os.path.join(here, pattern))]
    if not bundled:
        pytest.skip("this NumPy bundles no OpenBLAS (built against another BLAS)")
    assert blas.gemm_name(np.float32) == "scipy_cblas_sgemm64_"
    assert blas.gemm_name(np.float64) == "scipy_cblas_dgemm64_"


def test_blas_is_called_with_beta_one(monkeypatch):
    """The product goes to the GEMM, in one call, with its operands' layout (a transposed
    view as 'transposed', its leading dimension from its strides) and beta = 1."""
    calls = []

    def gemm(*args):
        calls.append(args)

    monkeypatch.setattr(blas, "_gemm", lambda dtype: gemm)
    out = np.zeros((4, 3), dtype=np.float32)
    a = np.zeros((7, 4), dtype=np.float32).T  # (4, 7), columns of unit stride
    b = np.zeros((7, 10), dtype=np.float32)[:, 2:5]  # (7, 3), leading dimension 10
    blas.add_product(out, a, b, part_bytes=1)
    assert len(calls) == 1
    order, trans_a, trans_b, m, n, k, alpha, _, lda, _, ldb, beta, _, ldc = calls[0]
    assert (order, trans_a, trans_b) == (101, 112, 111)
    assert (m, n, k, lda, ldb, ldc) == (4, 3, 7, 4, 10, 3)
    assert (alpha, beta) == (1.0, 1.0)
