"""Cases and float64 references of the ±1-target margin losses."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, elementwise, reduce, reference, register_cases, rng


def _log1p_exp(z: float) -> float:
    """log(1 + e^z) without overflow."""
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


@reference("soft_margin_loss")
def soft_margin_loss(input, target, reduction="mean"):
    return reduce(elementwise(lambda x, y: _log1p_exp(-y * x), input, target), reduction)


def _hinge_embedding(x: float, y: float, margin: float) -> float:
    if y == 1:
        return x
    if y == -1:
        return max(0.0, margin - x)
    return x + max(0.0, margin - x)  # torch applies both terms to any other target


@reference("hinge_embedding_loss")
def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    values = elementwise(lambda x, y: _hinge_embedding(x, y, margin), input, target)
    return reduce(values, reduction)


@reference("margin_ranking_loss")
def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    values = elementwise(lambda a, b, y: max(0.0, -y * (a - b) + margin), input1, input2, target)
    return reduce(values, reduction)


def _signs(g: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    return np.where(g.random(shape) < 0.5, -1, 1).astype(dtype)


@register_cases
def margin_cases() -> Iterator[Case]:
    for seed, shape in enumerate(((4, 5), (), (7,), (0, 2), (2, 3, 4))):
        g = rng(200 + seed)
        x = 2 * g.standard_normal(shape)
        for reduction in REDUCTIONS:
            yield Case("soft_margin_loss", {"input": x, "target": _signs(g, shape)},
                       {"reduction": reduction})
            for margin in (1.0, 0.5, 2.0):
                yield Case("hinge_embedding_loss",
                           {"input": x, "target": _signs(g, shape, np.int64)},
                           {"reduction": reduction, "margin": margin})
            for margin in (0.0, 0.5, -0.3):
                yield Case("margin_ranking_loss",
                           {"input1": x, "input2": g.standard_normal(shape),
                            "target": _signs(g, shape)},
                           {"reduction": reduction, "margin": margin},
                           differentiable=("input1", "input2"))
    g = rng(250)
    x = 2 * g.standard_normal((4, 6))
    odd_targets = g.choice([-1.0, 1.0, 0.0, 2.0, 0.5], size=(4, 6))
    for reduction in REDUCTIONS:
        yield Case("hinge_embedding_loss", {"input": x, "target": odd_targets},
                   {"reduction": reduction}, label="targets-not-pm1")
