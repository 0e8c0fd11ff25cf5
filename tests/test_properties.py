"""Property-based tests: random shapes, options and values within each loss's domain.

The elementwise losses and the class-index and binary cross entropies are drawn.

For every drawn call, on numpy, array_api_strict and torch:
- the result agrees with the float64 reference, element by element;
- ``'sum'`` is the sum of ``'none'`` and ``'mean'`` its (weighted) mean;
- nan appears exactly where torch puts nan.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import FLOAT64, assert_close, call_quietly, torch_oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyloss
from anyloss.conformance import catalogue, namespaces

torch = pytest.importorskip("torch")

BACKENDS = ("numpy", "array_api_strict", "torch")
REFERENCES = catalogue.references()
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


def _array(shape, lo, hi):
    return hnp.arrays(np.float64, shape, elements=_floats(lo, hi))


@st.composite
def pointwise_call(draw):
    """(loss, arrays, options) for one of the elementwise losses, with valid data."""
    loss = draw(st.sampled_from([
        "l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "soft_margin_loss",
        "hinge_embedding_loss", "margin_ranking_loss", "kl_div", "poisson_nll_loss",
        "gaussian_nll_loss",
    ]))
    shape = draw(SHAPES)
    x = draw(_array(shape, -20, 20))
    options: dict = {}
    if loss in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"):
        arrays = {"input": x, "target": draw(_array(shape, -20, 20))}
        if loss == "huber_loss":
            options["delta"] = draw(_floats(0.01, 5))
        if loss == "smooth_l1_loss":
            options["beta"] = draw(st.one_of(st.just(0.0), _floats(0.01, 5)))
        if loss != "smooth_l1_loss" and draw(st.booleans()):
            arrays["weight"] = draw(_array(shape, 0.1, 3))
    elif loss == "soft_margin_loss":
        arrays = {"input": x, "target": draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))}
    elif loss == "hinge_embedding_loss":
        arrays = {"input": x, "target": draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0, 0.0, 2.0])))}
        options["margin"] = draw(_floats(-1, 3))
    elif loss == "margin_ranking_loss":
        arrays = {"input1": x, "input2": draw(_array(shape, -20, 20)),
                  "target": draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))}
        options["margin"] = draw(_floats(-1, 3))
    elif loss == "kl_div":
        options["log_target"] = draw(st.booleans())
        target = draw(_array(shape, -5, 0)) if options["log_target"] else draw(
            hnp.arrays(np.float64, shape, elements=st.one_of(st.just(0.0), _floats(-0.5, 1))))
        arrays = {"input": draw(_array(shape, -20, 0)), "target": target}
    elif loss == "poisson_nll_loss":
        options["log_input"] = draw(st.booleans())
        options["full"] = draw(st.booleans())
        rate = draw(_array(shape, -5, 5)) if options["log_input"] else draw(_array(shape, 0, 50))
        arrays = {"input": rate, "target": draw(hnp.arrays(np.float64, shape, elements=st.integers(0, 30).map(float)))}
    else:  # gaussian_nll_loss
        arrays = {"input": x, "target": draw(_array(shape, -20, 20)), "var": draw(_array(shape, 0, 10))}
        options["full"] = draw(st.booleans())
    return loss, arrays, options


@st.composite
def class_call(draw):
    """(loss, arrays, options) for nll_loss, cross_entropy and the two binary cross entropies."""
    loss = draw(st.sampled_from(["nll_loss", "cross_entropy", "binary_cross_entropy",
                                 "binary_cross_entropy_with_logits"]))
    n, c = draw(st.integers(0, 5)), draw(st.integers(1, 5))
    options: dict = {}
    if loss in ("nll_loss", "cross_entropy"):
        logits = draw(_array((n, c), -30, 30))
        if loss == "nll_loss":
            logits = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        target = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
        arrays = {"input": logits, "target": target}
        if draw(st.booleans()):
            arrays["weight"] = draw(_array((c,), 0.1, 3))
        if draw(st.booleans()):
            options["ignore_index"] = draw(st.integers(0, c - 1))
        if loss == "cross_entropy":
            options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5]))
    else:
        shape = draw(SHAPES)
        x = draw(_array(shape, -50, 50))
        if loss == "binary_cross_entropy":
            x = 1 / (1 + np.exp(-x))
        arrays = {"input": x, "target": draw(_array(shape, 0, 1))}
        if draw(st.booleans()):
            arrays["weight"] = draw(_array(shape[-1:], 0.1, 3))
    return loss, arrays, options


def _reduced(loss, arrays, options, reduction, ns):
    return ns.to_numpy(call_quietly(getattr(anyloss, loss),
                                    **{k: ns.from_numpy(a) for k, a in arrays.items()},
                                    **options, reduction=reduction))


def _mean_denominator(loss, arrays, options, none):
    """What torch's 'mean' divides the sum of 'none' by."""
    weight = arrays.get("weight")
    if loss in ("nll_loss", "cross_entropy"):
        target = arrays["target"]
        kept = target != options.get("ignore_index", -100)
        per_target = np.ones(target.shape) if weight is None else weight[target]
        return math.fsum(per_target[kept].tolist())
    if weight is not None and loss in ("l1_loss", "mse_loss"):
        return math.fsum(np.broadcast_to(weight, none.shape).ravel().tolist())
    return none.size


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=st.one_of(pointwise_call(), class_call()))
def test_random_calls_agree_with_reference_and_torch(backend_name, call):
    loss, arrays, options = call
    ns = namespaces.get(backend_name)
    none = _reduced(loss, arrays, options, "none", ns)
    expected_none = REFERENCES[loss](**arrays, **options, reduction="none")
    assert_close(none, expected_none, **FLOAT64)
    torch_none, _ = torch_oracle(loss, arrays, {**options, "reduction": "none"})
    torch_none = torch_none.numpy()
    assert np.array_equal(np.isnan(none), np.isnan(torch_none)), "nan only where torch has nan"

    total = _reduced(loss, arrays, options, "sum", ns)
    mean = _reduced(loss, arrays, options, "mean", ns)
    values = none.ravel().tolist()
    assert_close(total, np.asarray(math.fsum(values)), rtol=1e-9, atol=1e-9)
    # 'none' is already weighted; 'mean' divides its sum by the count or the weight sum.
    denominator = _mean_denominator(loss, arrays, options, none)
    expected_mean = math.fsum(values) / denominator if denominator else math.nan
    assert_close(mean, np.asarray(expected_mean), rtol=1e-9, atol=1e-9)
