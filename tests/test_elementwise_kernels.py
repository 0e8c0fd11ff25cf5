"""The one-pass NumPy kernels of the elementwise losses (backends/numpy/elementwise.py).

Each kernel is called directly, with the arguments the public function hands it, and
compared element by element with anyloss's written-once formula (fast paths off) and with
``torch.nn.functional``: float64 to the conformance tolerance, float32 to float32's; every
reduction and option, the broadcasts the kernels take, nan/inf/signed-zero inputs. Then:
what they decline (and that the public function still answers), results that do not depend
on the thread count, and no answer at all without numba.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import FLOAT32, FLOAT64, assert_close, call_quietly, torch_oracle

import anyloss
from anyloss import _registry
from anyloss.backends.numpy import compiled
from anyloss.backends.numpy import elementwise as kernels

pytest.importorskip("numba")

REDUCTIONS = ("none", "mean", "sum")
SHAPE = (37, 129)  # not a multiple of the SIMD width; several segments per tile
LARGE = (300, 1000)  # more than one tile, above the parallel threshold

NAMES = ("huber_loss", "smooth_l1_loss", "soft_margin_loss", "hinge_embedding_loss",
         "multilabel_soft_margin_loss", "kl_div", "poisson_nll_loss", "gaussian_nll_loss",
         "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss")


def _data(shape, dtype, seed=0):
    g = np.random.default_rng(seed)
    n, d = shape

    def cast(a):
        return np.ascontiguousarray(a, dtype=dtype)

    return {
        "x": cast(g.standard_normal(shape) * 2), "y": cast(g.standard_normal(shape) * 2),
        "signs": cast(np.where(g.random(shape) < 0.5, -1.0, 1.0)),
        "labels": cast(g.random(shape) < 0.5),
        "unit": cast(g.uniform(0.01, 0.99, shape)), "target01": cast(g.random(shape)),
        "counts": cast(g.poisson(2.0, shape)), "positive": cast(g.uniform(0.0, 2.0, shape)),
        "classes": cast(g.uniform(0.2, 2.0, d)), "rows": cast(g.uniform(0.2, 2.0, (n, 1))),
        "row_signs": cast(np.where(g.random(n) < 0.5, -1.0, 1.0)),
    }


def _cases(shape, dtype, seed=0):
    """``(id, name, arrays, options)``: the public call ``name(*arrays, **options)``."""
    a = _data(shape, dtype, seed)
    log_unit = np.log(a["unit"])
    return [
        ("huber", "huber_loss", (a["x"], a["y"]), {}),
        ("huber-delta", "huber_loss", (a["x"], a["y"]), {"delta": 0.3}),
        ("smooth_l1", "smooth_l1_loss", (a["x"], a["y"]), {}),
        ("smooth_l1-beta", "smooth_l1_loss", (a["x"], a["y"]), {"beta": 2.5}),
        ("soft_margin", "soft_margin_loss", (a["x"], a["signs"]), {}),
        ("hinge", "hinge_embedding_loss", (a["x"], a["signs"]), {}),
        ("hinge-margin", "hinge_embedding_loss", (a["x"], a["signs"]), {"margin": 0.5}),
        ("hinge-other-targets", "hinge_embedding_loss", (a["x"], a["y"]), {}),
        ("multilabel", "multilabel_soft_margin_loss", (a["x"], a["labels"]), {}),
        ("multilabel-weight", "multilabel_soft_margin_loss", (a["x"], a["target01"]),
         {"weight": a["classes"]}),
        ("kl", "kl_div", (log_unit, a["target01"]), {}),
        ("kl-batchmean", "kl_div", (log_unit, a["target01"]), {"reduction": "batchmean"}),
        ("kl-log-target", "kl_div", (log_unit, np.log(a["target01"])), {"log_target": True}),
        ("poisson", "poisson_nll_loss", (a["x"], a["counts"]), {}),
        ("poisson-full", "poisson_nll_loss", (a["x"], a["counts"]), {"full": True}),
        ("poisson-rate", "poisson_nll_loss", (a["positive"], a["counts"]),
         {"log_input": False}),
        ("poisson-rate-full-eps", "poisson_nll_loss", (a["positive"], a["counts"]),
         {"log_input": False, "full": True, "eps": 0.1}),
        ("gaussian", "gaussian_nll_loss", (a["x"], a["y"], a["positive"]), {}),
        ("gaussian-full-eps", "gaussian_nll_loss", (a["x"], a["y"], a["positive"]),
         {"full": True, "eps": 0.5}),
        ("gaussian-row-var", "gaussian_nll_loss", (a["x"], a["y"], a["rows"]), {}),
        ("gaussian-short-var", "gaussian_nll_loss", (a["x"], a["y"], a["rows"][:, 0].copy()),
         {}),
        ("gaussian-float-var", "gaussian_nll_loss", (a["x"], a["y"], 0.7), {"full": True}),
        ("bce", "binary_cross_entropy", (a["unit"], a["target01"]), {}),
        ("bce-weight", "binary_cross_entropy", (a["unit"], a["target01"]),
         {"weight": a["positive"]}),
        ("bce-class-weight", "binary_cross_entropy", (a["unit"], a["target01"]),
         {"weight": a["classes"]}),
        ("bce-row-weight", "binary_cross_entropy", (a["unit"], a["target01"]),
         {"weight": a["rows"]}),
        ("bce-one-weight", "binary_cross_entropy", (a["unit"], a["target01"]),
         {"weight": a["classes"][:1].copy()}),
        ("bce-logits", "binary_cross_entropy_with_logits", (a["x"] * 10, a["target01"]), {}),
        ("bce-logits-weights", "binary_cross_entropy_with_logits", (a["x"], a["target01"]),
         {"weight": a["rows"], "pos_weight": a["classes"]}),
        ("bce-logits-full-pos", "binary_cross_entropy_with_logits", (a["x"], a["labels"]),
         {"weight": a["classes"], "pos_weight": a["positive"]}),
        ("cosine", "cosine_embedding_loss", (a["x"], a["y"], a["row_signs"]), {}),
        ("cosine-margin-int", "cosine_embedding_loss",
         (a["x"], a["y"], a["row_signs"].astype(np.int64)), {"margin": 0.25}),
    ]


def kernel_call(name, arrays, options):
    """The kernel's answer for the public call ``name(*arrays, **options)``: the arguments
    as the public function hands them to the registry (the reduction resolved)."""
    o = dict(options)
    reduction = o.pop("reduction", "mean")
    f = getattr(kernels, name)
    if name == "huber_loss":
        return f(*arrays, reduction=reduction, delta=o.get("delta", 1.0),
                 weight=o.get("weight"))
    if name == "smooth_l1_loss":
        return f(*arrays, reduction=reduction, beta=o.get("beta", 1.0))
    if name == "soft_margin_loss":
        return f(*arrays, reduction=reduction)
    if name == "hinge_embedding_loss":
        return f(*arrays, margin=o.get("margin", 1.0), reduction=reduction)
    if name == "multilabel_soft_margin_loss":
        return f(*arrays, o.get("weight"), reduction=reduction)
    if name == "kl_div":
        return f(*arrays, reduction=reduction, log_target=o.get("log_target", False))
    if name == "poisson_nll_loss":
        return f(*arrays, log_input=o.get("log_input", True), full=o.get("full", False),
                 eps=o.get("eps", 1e-8), reduction=reduction)
    if name == "gaussian_nll_loss":
        return f(*arrays, full=o.get("full", False), eps=o.get("eps", 1e-6),
                 reduction=reduction)
    if name == "binary_cross_entropy":
        return f(*arrays, o.get("weight"), reduction=reduction)
    if name == "binary_cross_entropy_with_logits":
        return f(*arrays, o.get("weight"), o.get("pos_weight"), reduction=reduction)
    if name == "cosine_embedding_loss":
        return f(*arrays, margin=o.get("margin", 0.0), reduction=reduction)
    raise AssertionError(name)


def generic(name, arrays, options):
    with anyloss.fast_paths(False):
        return call_quietly(getattr(anyloss, name), *arrays, **options)


def with_reductions(cases):
    for case_id, name, arrays, options in cases:
        reductions = ("none", "batchmean", "sum") if "reduction" in options else REDUCTIONS
        for reduction in reductions:
            yield pytest.param(name, arrays, {**options, "reduction": reduction},
                               id=f"{case_id}-{reduction}")


#: float32: the conformance tolerance, with an absolute floor of 1e-5 for losses that are
#: small differences of O(1) terms in float32 (poisson's exp(x) - y x, kl's y log y - y x),
#: whose float32 rounding differs by an ulp of the terms between the two computations.
FLOAT32_TERMS = {**FLOAT32, "atol": 1e-5}
TOLERANCE = {np.float64: FLOAT64, np.float32: FLOAT32_TERMS}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, arrays, options",
                         list(with_reductions(_cases(SHAPE, np.float64))))
def test_kernel_matches_the_formula_and_torch(dtype, name, arrays, options):
    arrays = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                   else a for a in arrays)
    options = {k: v.astype(dtype) if isinstance(v, np.ndarray) else v
               for k, v in options.items()}
    got = kernel_call(name, arrays, options)
    assert got is not NotImplemented
    expected = generic(name, arrays, options)
    assert type(got) is type(expected) and got.dtype == dtype
    assert_close(got, expected, **TOLERANCE[dtype])
    names = {"gaussian_nll_loss": ("input", "target", "var"),
             "cosine_embedding_loss": ("input1", "input2", "target")}.get(
                 name, ("input", "target"))
    if isinstance(arrays[-1], float):  # torch takes a float var as a keyword
        arrays, options = arrays[:-1], {**options, "var": arrays[-1]}
        names = names[:-1]
    reference, _ = torch_oracle(name, dict(zip(names, arrays, strict=False)),
                                _torch_options(options))
    assert_close(got, reference.numpy(), **TOLERANCE[dtype])


def _torch_options(options):
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in options.items()}


def _specials(dtype):
    """A (4, 8) array with nan, infinities, signed zeros, tiny and large values."""
    row = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 80.0, -80.0]
    rows = [row, row[1:] + row[:1], row[2:] + row[:2], row[3:] + row[:3]]
    return np.asarray(rows, dtype=dtype)


SPECIAL_CASES = [
    ("huber_loss", lambda s, o: (s, o.T.copy().reshape(s.shape)), {}),
    ("smooth_l1_loss", lambda s, o: (s, np.flip(s).copy()), {}),
    ("soft_margin_loss", lambda s, o: (s, np.sign(np.flip(s)) + (np.flip(s) == 0)), {}),
    ("hinge_embedding_loss", lambda s, o: (s, np.where(o > 0, 1.0, -1.0).astype(s.dtype)), {}),
    ("multilabel_soft_margin_loss", lambda s, o: (s, (o > 0).astype(s.dtype)), {}),
    ("kl_div", lambda s, o: (s, np.abs(np.flip(s)).copy()), {}),
    ("kl_div", lambda s, o: (s, np.flip(s).copy()), {"log_target": True}),
    ("poisson_nll_loss", lambda s, o: (s, np.abs(np.flip(s)).copy()), {"full": True}),
    ("poisson_nll_loss", lambda s, o: (np.abs(s), np.abs(np.flip(s)).copy()),
     {"log_input": False, "full": True}),
    ("gaussian_nll_loss", lambda s, o: (s, np.flip(s).copy(), np.abs(o)), {"full": True}),
    ("binary_cross_entropy", lambda s, o: (np.clip(np.nan_to_num(s), 0, 1),
                                           np.clip(np.nan_to_num(o), 0, 1)), {}),
    ("binary_cross_entropy_with_logits", lambda s, o: (s, np.flip(s).copy()), {}),
    ("cosine_embedding_loss", lambda s, o: (s, np.flip(s).copy(),
                                            np.asarray([1.0, -1.0, 0.0, 1.0], s.dtype)), {}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, build, options", SPECIAL_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SPECIAL_CASES)])
def test_special_values_as_the_formula(dtype, name, build, options):
    s = _specials(dtype)
    other = np.asarray(np.random.default_rng(3).standard_normal(s.shape), dtype=dtype)
    arrays = build(s, other)
    for reduction in REDUCTIONS:
        o = {**options, "reduction": reduction}
        got = kernel_call(name, arrays, o)
        expected = generic(name, arrays, o)
        assert got is not NotImplemented
        assert_close(got, expected, **TOLERANCE[dtype])
        if reduction == "none":  # the signs of zeros too
            zeros = np.asarray(expected) == 0
            assert np.array_equal(np.signbit(got[zeros]), np.signbit(expected[zeros]))


def test_soft_margin_is_finite_where_exp_overflows():
    x = np.asarray([-200.0, 200.0, -1e30], dtype=np.float32)
    y = np.ones(3, dtype=np.float32)
    got = kernels.soft_margin_loss(x, y, reduction="none")
    assert_close(got, np.asarray([200.0, 0.0, 1e30], dtype=np.float32), **FLOAT32)
    assert not np.signbit(got[1])


def test_bce_clamps_the_logarithms_at_minus_100():
    x = np.asarray([0.0, 1.0, 0.0, 1.0, 0.5])
    y = np.asarray([1.0, 0.0, 0.0, 1.0, 0.5])
    got = kernels.binary_cross_entropy(x, y, None, reduction="none")
    reference, _ = torch_oracle("binary_cross_entropy", {"input": x, "target": y},
                                {"reduction": "none"})
    assert_close(got, reference.numpy(), **FLOAT64)
    assert got[0] == 100.0 and got[1] == 100.0


@pytest.mark.parametrize("name, arrays, options",
                         list(with_reductions(_cases(LARGE, np.float32, seed=5))))
def test_thread_count_does_not_change_results(name, arrays, options):
    with anyloss.threads(1):
        one = kernel_call(name, arrays, options)
    with anyloss.threads(2):
        two = kernel_call(name, arrays, options)
    assert one is not NotImplemented
    assert np.array_equal(np.asarray(one), np.asarray(two), equal_nan=True)
    assert_close(one, generic(name, arrays, options), **FLOAT32_TERMS)


# --- declines -------------------------------------------------------------------------------


def _declined_calls():
    a = _data(SHAPE, np.float64)
    x, y, unit, t01 = a["x"], a["y"], a["unit"], a["target01"]
    f32 = y.astype(np.float32)
    strided = np.asfortranarray(y)
    bad_unit = unit.copy()
    bad_unit[3, 4] = 1.5
    nan_unit = unit.copy()
    nan_unit[0, 0] = np.nan
    negative_var = a["positive"].copy()
    negative_var[2, 2] = -1e-3
    return [
        ("mixed-dtypes", "huber_loss", (x, f32), {}),
        ("fortran-order", "huber_loss", (x, strided), {}),
        ("broadcast", "huber_loss", (x, y[:1]), {}),
        ("weight", "huber_loss", (x, y), {"weight": a["positive"]}),
        ("delta-zero", "huber_loss", (x, y), {"delta": 0.0}),
        ("beta-negative", "smooth_l1_loss", (x, y), {"beta": -1.0}),
        # beta = 0 is l1_loss itself (torch calls it), summed in l1_loss's order
        ("beta-zero", "smooth_l1_loss", (x, y), {"beta": 0.0}),
        ("integer-target", "soft_margin_loss", (x, a["signs"].astype(np.int64)), {}),
        ("empty", "soft_margin_loss", (x[:0], y[:0]), {}),
        ("one-axis", "multilabel_soft_margin_loss", (x[0], a["labels"][0]), {}),
        ("row-weight", "multilabel_soft_margin_loss", (x, a["labels"]),
         {"weight": a["positive"]}),
        ("input-above-1", "binary_cross_entropy", (bad_unit, t01), {}),
        ("input-nan", "binary_cross_entropy", (nan_unit, t01), {}),
        ("target-above-1", "binary_cross_entropy", (unit, bad_unit), {}),
        ("weight-dtype", "binary_cross_entropy", (unit, t01),
         {"weight": a["classes"].astype(np.float32)}),
        ("weight-2-axes-broadcast", "binary_cross_entropy", (unit, t01),
         {"weight": np.ones((SHAPE[0], 1, 1))}),
        ("negative-var", "gaussian_nll_loss", (x, y, negative_var), {}),
        ("negative-float-var", "gaussian_nll_loss", (x, y, -1.0), {}),
        ("var-zero-eps-zero", "gaussian_nll_loss", (x, y, 0.0), {"eps": 0.0}),
        ("cosine-1d", "cosine_embedding_loss", (x[0], y[0], np.asarray(1.0)), {}),
        ("cosine-float32-target", "cosine_embedding_loss",
         (x, y, a["row_signs"].astype(np.float32)), {}),
    ]


@pytest.mark.parametrize("name, arrays, options",
                         [pytest.param(*c[1:], id=c[0]) for c in _declined_calls()])
def test_declines_what_it_does_not_take(name, arrays, options):
    assert kernel_call(name, arrays, options) is NotImplemented


def test_declines_torch_tensors():
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, 4, dtype=torch.float64)
    assert kernels.soft_margin_loss(x, x, reduction="mean") is NotImplemented


def test_declines_unknown_reductions():
    x = np.zeros((2, 3))
    assert kernels.soft_margin_loss(x, x, reduction="batchmean") is NotImplemented
    assert kernels.kl_div(x, x, reduction="nonsense", log_target=False) is NotImplemented


@pytest.mark.parametrize("name, arrays, options",
                         list(with_reductions(_cases((4, 6), np.float64)))[::3])
def test_without_numba_every_kernel_declines(monkeypatch, name, arrays, options):
    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)
    _registry._clear_caches()
    assert kernel_call(name, arrays, options) is NotImplemented
    # The public function still answers, with the written-once formula.
    got = call_quietly(getattr(anyloss, name), *arrays, **options)
    assert_close(got, generic(name, arrays, options), **FLOAT64)


# --- the registry and the dispatch ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_kernel_is_registered(name):
    (record,) = _registry.records(name, "numpy", ("first", "checked"))
    assert record.stage == "first" and record.needs == "numba"
    assert record.load() is getattr(kernels, name)


@pytest.mark.parametrize("name, arrays, options",
                         list(with_reductions(_cases(SHAPE, np.float32)))[1::4])
def test_the_public_function_gives_the_kernels_answer(name, arrays, options):
    """With fast paths on, the public function hands the call to the kernel."""
    got = call_quietly(getattr(anyloss, name), *arrays, **options)
    expected = kernel_call(name, arrays, options)
    assert np.array_equal(np.asarray(got), np.asarray(expected), equal_nan=True)
    assert type(got) is type(expected)


def test_the_public_function_still_raises_for_what_the_kernel_declined():
    a = _data(SHAPE, np.float64)
    bad = a["unit"].copy()
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        anyloss.binary_cross_entropy(bad, a["target01"])
    var = a["positive"].copy()
    var[1, 1] = -1.0
    with pytest.raises(ValueError, match="var has negative"):
        anyloss.gaussian_nll_loss(a["x"], a["y"], var)
    with pytest.raises(ValueError, match="delta"):
        anyloss.huber_loss(a["x"], a["y"], delta=-1.0)
    assert math.isnan(anyloss.soft_margin_loss(a["x"][:0], a["y"][:0]))
