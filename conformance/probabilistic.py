"""Cases and float64 references of kl_div, poisson_nll_loss and gaussian_nll_loss."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, elementwise, plus, reduce, reference, register_cases, rng


def _kl_term(x: float, y: float, log_target: bool) -> float:
    if log_target:
        return math.exp(y) * plus(y, -x)
    if y == 0:
        return 0.0 - 0.0 * x  # 0 log 0 = 0; an infinite x still gives nan, as 0 * inf does
    if y < 0:
        return math.nan
    return plus(y * math.log(y), -y * x)  # y log y - y x: inf - inf is nan, as torch gives


@reference("kl_div")
def kl_div(input, target, reduction="mean", log_target=False):
    """``y (log y - x)`` per element (``e^y (y - x)`` for log targets), 0 where y is 0."""
    values = elementwise(lambda x, y: _kl_term(x, y, log_target), input, target)
    if reduction == "batchmean":
        total = reduce(values, "sum")
        return total / np.asarray(input).shape[0] if np.ndim(input) else total
    return reduce(values, reduction)


def _poisson_term(x: float, y: float, log_input: bool, full: bool, eps: float) -> float:
    terms = [math.exp(x), -y * x] if log_input else [x, -y * math.log(x + eps)]
    if full and y > 1:
        terms += [y * math.log(y), -y, 0.5 * math.log(2 * math.pi * y)]
    return plus(*terms)


@reference("poisson_nll_loss")
def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    """``e^x - y x`` (or ``x - y log(x + eps)``), plus Stirling's term with ``full``."""
    values = elementwise(lambda x, y: _poisson_term(x, y, log_input, full, eps), input, target)
    return reduce(values, reduction)


@reference("gaussian_nll_loss")
def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """``(log v + (x - y)**2 / v) / 2`` with the variance clamped at ``eps``."""
    input = np.asarray(input)
    var = np.asarray(var, dtype=np.float64)
    if var.shape != input.shape and var.shape == input.shape[:-1]:
        var = var[..., None]

    def term(x: float, y: float, v: float) -> float:
        v = max(v, eps)
        constant = 0.5 * math.log(2 * math.pi) if full else 0.0
        return plus(0.5 * math.log(v), 0.5 * (x - y) ** 2 / v, constant)

    return reduce(elementwise(term, input, target, var), reduction)


#: Variances of 1e-9 underflow to 0 in float16, and eps=1e-6 is subnormal there:
#: those cases test the clamp in float64 and float32 only.
_ALL_DTYPES = ("float64", "float32", "float16")
_BELOW_FLOAT16 = ("float64", "float32")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@register_cases
def distribution_cases() -> Iterator[Case]:
    """KL with zero and log targets, Poisson with every flag, Gaussian with each variance shape."""
    g = rng(300)
    for shape in ((4, 5), (3, 2, 4), (6,)):
        log_q = np.log(_softmax(g.standard_normal(shape)))
        p = _softmax(g.standard_normal(shape))
        p_with_zeros = np.where(g.random(shape) < 0.3, 0.0, p)
        for reduction in (*REDUCTIONS, "batchmean"):
            yield Case("kl_div", {"input": log_q, "target": p}, {"reduction": reduction},
                       differentiable=("input", "target"))
            yield Case("kl_div", {"input": log_q, "target": p_with_zeros},
                       {"reduction": reduction}, label="zero-targets")
            yield Case("kl_div", {"input": log_q, "target": np.log(p)},
                       {"reduction": reduction, "log_target": True},
                       differentiable=("input", "target"))
    for reduction in (*REDUCTIONS, "batchmean"):
        yield Case("kl_div", {"input": np.asarray(-0.7), "target": np.asarray(0.4)},
                   {"reduction": reduction}, label="0d", differentiable=("input", "target"))

    for rate_shape in ((4, 5), (), (0, 3)):
        rate = g.uniform(0.1, 4.0, rate_shape)
        counts = np.asarray(g.poisson(rate), dtype=np.float64)
        for reduction in REDUCTIONS:
            for full in (False, True):
                yield Case("poisson_nll_loss", {"input": np.log(rate), "target": counts},
                           {"reduction": reduction, "full": full})
                yield Case("poisson_nll_loss", {"input": rate, "target": counts},
                           {"reduction": reduction, "full": full, "log_input": False})
            yield Case("poisson_nll_loss", {"input": rate, "target": counts},
                       {"reduction": reduction, "log_input": False, "eps": 0.5})

    x, y = g.standard_normal((4, 3)), g.standard_normal((4, 3))
    variances = {
        "same-shape": g.uniform(0.1, 2.0, (4, 3)),
        "one-fewer-dim": g.uniform(0.1, 2.0, (4,)),
        "size-1-dim": g.uniform(0.1, 2.0, (4, 1)),
        "below-eps": np.where(g.random((4, 3)) < 0.5, 1e-9, g.uniform(0.1, 2.0, (4, 3))),
    }
    for reduction in REDUCTIONS:
        for full in (False, True):
            for label, var in variances.items():
                yield Case("gaussian_nll_loss", {"input": x, "target": y, "var": var},
                           {"reduction": reduction, "full": full}, label=label,
                           differentiable=("input", "target", "var"),
                           dtypes=_BELOW_FLOAT16 if label == "below-eps" else _ALL_DTYPES)
            yield Case("gaussian_nll_loss", {"input": x, "target": y},
                       {"var": 0.7, "reduction": reduction, "full": full}, label="float-var",
                       differentiable=("input", "target"))
        yield Case("gaussian_nll_loss", {"input": x, "target": y, "var": variances["below-eps"]},
                   {"reduction": reduction, "eps": 1e-3}, label="eps",
                   differentiable=("input", "target", "var"), dtypes=_BELOW_FLOAT16)
        yield Case("gaussian_nll_loss",
                   {"input": np.asarray(0.3), "target": np.asarray(-0.2), "var": np.asarray(0.5)},
                   {"reduction": reduction}, label="0d", differentiable=("input", "target", "var"))
