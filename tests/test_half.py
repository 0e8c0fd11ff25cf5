"""float16 in the NumPy engine: the compiled conversions (:mod:`.compiled.half`) and the
losses that compute float16 operands in float32 by them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import anyloss
from anyloss.backends.numpy import compiled

pytest.importorskip("numba")


def test_float16_conversions_are_numpys_casts():
    """The compiled float16 <-> float32 conversions equal NumPy's casts
    bit for bit (nan for nan): every float16 pattern to float32; to float16, every float16
    value, the midpoints between neighbours and the float32 values either side of them
    (ties to even), values over float32's range of magnitudes, random bit patterns."""
    k = compiled.load("half")
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    singles = np.empty(halves.size, np.float32)
    k.halves_to_singles(3, halves, singles)
    expected = halves.view(np.float16).astype(np.float32)
    same = (singles.view(np.uint32) == expected.view(np.uint32)) | (
        np.isnan(singles) & np.isnan(expected))
    assert same.all(), halves[~same][:10]

    g = np.random.default_rng(7)
    values = np.unique(expected[np.isfinite(expected)].astype(np.float64))
    midpoints = ((values[1:] + values[:-1]) / 2).astype(np.float32)  # exact in float32
    x = np.concatenate([
        expected, midpoints, np.nextafter(midpoints, np.float32(np.inf)),
        np.nextafter(midpoints, np.float32(-np.inf)),
        (g.standard_normal(1 << 20) * 10.0 ** g.uniform(-12, 6, 1 << 20)).astype(np.float32),
        g.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.asarray([65504, 65519.996, 65520, 65536, 1e10, np.inf, -np.inf, np.nan, 0.0, -0.0,
                    1e-45, 2.98e-8, 2.9802322e-8, 2.99e-8, 6.1e-5], np.float32)])
    bits = np.empty(x.size, np.uint16)
    k.singles_to_halves(3, x, bits)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(np.float16)
    same = (bits == cast.view(np.uint16)) | (np.isnan(bits.view(np.float16)) & np.isnan(cast))
    assert same.all(), x[~same][:10]


def _elementwise_calls(g):
    """``(name, args, kwargs)`` of a call of each loss with a float16 route on NumPy (the
    elementwise kernels, and the losses computed by their formula), float32 operands that
    float16 holds exactly."""
    def normal(*shape):
        return (2 * g.standard_normal(shape)).astype(np.float16).astype(np.float32)

    def unit(*shape):
        return g.uniform(0.05, 0.95, shape).astype(np.float16).astype(np.float32)

    def signs(*shape):
        return np.where(g.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)

    n, c = 96, 700  # 67200 elements: past the kernels' parallel threshold
    x, y = normal(n, c), normal(n, c)
    return [
        ("huber_loss", (x, y), {"delta": 0.7}),
        ("smooth_l1_loss", (x, y), {"beta": 0.5}),
        ("soft_margin_loss", (x, signs(n, c)), {}),
        ("hinge_embedding_loss", (x, signs(n, c)), {"margin": 0.5}),
        ("multilabel_soft_margin_loss", (x, (g.random((n, c)) < 0.5).astype(np.float32)),
         {}),
        ("kl_div", (-np.abs(x), unit(n, c)), {}),
        ("poisson_nll_loss", (x, np.abs(y)), {}),
        ("gaussian_nll_loss", (x, y, unit(n, c)), {}),
        ("binary_cross_entropy", (unit(n, c), unit(n, c)), {}),
        ("binary_cross_entropy_with_logits", (x, unit(n, c)), {}),
        ("cosine_embedding_loss", (x, y, signs(n)), {}),
        # The losses without a kernel: their formula on the float32 values
        # (backends/numpy/float16.py).
        ("l1_loss", (x, y), {}),
        ("mse_loss", (x, y), {}),
        ("margin_ranking_loss", (x, y, signs(n, c)), {"margin": 0.25}),
        ("triplet_margin_loss", (x, y, normal(n, c)), {"swap": True}),
    ]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_float16_is_the_float32_result_rounded(reduction, monkeypatch):
    """float16 operands give the float32 result on their values (the kernel's, or the
    formula's), rounded once to float16 by NumPy's rule; the compiled conversions ran (not
    NumPy's float16 arithmetic)."""
    half = compiled.load("half")
    converted = []
    to_float32 = half.to_float32

    def counting(a):
        converted.append(a.size)
        return to_float32(a)

    monkeypatch.setattr(half, "to_float32", counting)
    for name, args, kwargs in _elementwise_calls(np.random.default_rng(3)):
        kwargs = {**kwargs, "reduction": reduction}
        expected = np.asarray(getattr(anyloss, name)(*args, **kwargs)).astype(np.float16)
        converted.clear()
        args16 = tuple(a.astype(np.float16) for a in args)
        result = getattr(anyloss, name)(*args16, **kwargs)
        assert converted, name
        assert np.asarray(result).dtype == np.float16, name
        np.testing.assert_array_equal(result, expected, err_msg=name)


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss"])
def test_float16_broadcast_warns_once(name):
    """A float16 call whose target broadcasts against the input warns once, as a float32
    one does (the float16 route, which would call the loss again, leaves it alone)."""
    x, y = np.ones((4, 3), np.float16), np.zeros(3, np.float16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = getattr(anyloss, name)(y, x)
    assert [str(w.message)[:24] for w in caught] == ["Using a target size (4, "]
    assert np.asarray(result).dtype == np.float16 and float(result) == 1.0
