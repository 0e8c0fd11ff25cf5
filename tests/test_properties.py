"""Property-based tests: random shapes, options and values within each loss's domain.

For every drawn call, on numpy, array_api_strict and torch:
- the result agrees with the float64 reference, element by element;
- ``'sum'`` is the sum of ``'none'`` and ``'mean'`` its (weighted) mean;
- nan appears exactly where torch puts nan.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anyloss
from anyloss.conformance import catalogue, namespaces

from conftest import FLOAT64, assert_close, call_quietly, torch_oracle

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


def _reduced(loss, arrays, options, reduction, ns):
    return ns.to_numpy(call_quietly(getattr(anyloss, loss),
                                    **{k: ns.from_numpy(a) for k, a in arrays.items()},
                                    **options, reduction=reduction))


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=pointwise_call())
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
    weight = arrays.get("weight")
    if weight is not None and loss in ("l1_loss", "mse_loss"):
        # none is already weighted; torch's 'mean' divides by the sum of the weights.
        weight_sum = math.fsum(weight.ravel().tolist())
        expected_mean = math.fsum(values) / weight_sum if weight_sum else math.nan
    else:
        expected_mean = math.fsum(values) / none.size if none.size else math.nan
    assert_close(mean, np.asarray(expected_mean), rtol=1e-9, atol=1e-9)
