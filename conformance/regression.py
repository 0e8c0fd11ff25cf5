"""Cases and float64 references of the regression losses: l1, mse, huber, smooth_l1.

The references loop over elements with Python floats, one obvious line of math
per element, so that they share no code and no formula with anyloss.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, elementwise, reduce, reference, register_cases, rng

#: Shapes of (input, target): equal shapes, 0-d, an empty batch, a broadcast target.
SHAPES = (((3, 4), (3, 4)), ((), ()), ((2, 3, 5), (2, 3, 5)), ((0, 3), (0, 3)), ((3, 4), (4,)))


def _weighted(values, weight, reduction, mean_over_weight):
    if weight is None:
        return reduce(values, reduction)
    weighted = values * np.asarray(weight, dtype=np.float64)
    if reduction == "mean" and mean_over_weight:
        return reduce(weighted, "sum") / reduce(weight, "sum")
    return reduce(weighted, reduction)


@reference("l1_loss")
def l1_loss(input, target, reduction="mean", weight=None):
    """``|x - y|`` per element, optionally weighted; 'mean' divides by the summed weight."""
    values = elementwise(lambda x, y: abs(x - y), input, target)
    return _weighted(values, weight, reduction, mean_over_weight=True)


@reference("mse_loss")
def mse_loss(input, target, reduction="mean", weight=None):
    """``(x - y)**2`` per element, optionally weighted; 'mean' divides by the summed weight."""
    values = elementwise(lambda x, y: (x - y) ** 2, input, target)
    return _weighted(values, weight, reduction, mean_over_weight=True)


def _huber(x, y, delta):
    error = abs(x - y)
    return 0.5 * error**2 if error < delta else delta * (error - 0.5 * delta)


@reference("huber_loss")
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """Quadratic below ``delta``, linear above; a weight scales each element, 'mean' counts them."""
    values = elementwise(lambda x, y: _huber(x, y, delta), input, target)
    return _weighted(values, weight, reduction, mean_over_weight=False)


@reference("smooth_l1_loss")
def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """The Huber term of threshold ``beta`` divided by ``beta``; ``beta=0`` is ``l1_loss``."""
    if beta == 0:
        return l1_loss(input, target, reduction)
    values = elementwise(lambda x, y: _huber(x, y, beta) / beta, input, target)
    return reduce(values, reduction)


@register_cases
def regression_cases() -> Iterator[Case]:
    """Every reduction, delta and beta on :data:`SHAPES`; weighted and complex inputs."""
    for seed, (input_shape, target_shape) in enumerate(SHAPES):
        g = rng(seed)
        arrays = {"input": 2 * g.standard_normal(input_shape),
                  "target": 2 * g.standard_normal(target_shape)}
        both = ("input", "target")
        for reduction in REDUCTIONS:
            yield Case("l1_loss", arrays, {"reduction": reduction}, differentiable=both)
            yield Case("mse_loss", arrays, {"reduction": reduction}, differentiable=both)
            for delta in (1.0, 0.5, 3.0):
                yield Case("huber_loss", arrays, {"reduction": reduction, "delta": delta},
                           differentiable=both)
            for beta in (1.0, 0.0, 0.25, 2.0):
                yield Case("smooth_l1_loss", arrays, {"reduction": reduction, "beta": beta},
                           differentiable=both)
    g = rng(100)
    x, y, w = g.standard_normal((3, 4)), g.standard_normal((3, 4)), g.uniform(0.1, 2, (3, 4))
    for reduction in REDUCTIONS:
        for loss in ("l1_loss", "mse_loss", "huber_loss"):
            yield Case(loss, {"input": x, "target": y, "weight": w}, {"reduction": reduction},
                       label="weighted", differentiable=("input", "target", "weight"))
    complex_pair = {
        "input": g.standard_normal((3, 4)) + 1j * g.standard_normal((3, 4)),
        "target": g.standard_normal((3, 4)) + 1j * g.standard_normal((3, 4)),
    }
    for reduction in REDUCTIONS:
        yield Case("l1_loss", complex_pair, {"reduction": reduction}, label="complex",
                   differentiable=())
