"""Cases and float64 references of the ±1-target margin losses."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .catalogue import (
    REDUCTIONS,
    Case,
    elementwise,
    nan_max,
    reduce,
    reference,
    register_cases,
    rng,
)


def _log1p_exp(z: float) -> float:
    """log(1 + e^z) without overflow."""
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


@reference("soft_margin_loss")
def soft_margin_loss(input, target, reduction="mean"):
    """``log(1 + exp(-y x))`` per element."""
    return reduce(elementwise(lambda x, y: _log1p_exp(-y * x), input, target), reduction)


def _hinge_embedding(x: float, y: float, margin: float) -> float:
    # torch adds a 0 for the term a target leaves out: 0 + (-0.0) is +0.0.
    if y == 1:
        return 0.0 + x
    if y == -1:
        return nan_max(0.0, margin - x) + 0.0
    return x + nan_max(0.0, margin - x)  # torch applies both terms to any other target


@reference("hinge_embedding_loss")
def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    """``x`` for target 1, ``max(0, margin - x)`` for -1, both terms for any other target."""
    values = elementwise(lambda x, y: _hinge_embedding(x, y, margin), input, target)
    return reduce(values, reduction)


@reference("margin_ranking_loss")
def margin_ranking_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """``max(0, -y (x1 - x2) + margin)`` per element."""
    values = elementwise(lambda a, b, y: nan_max(0.0, -y * (a - b) + margin),
                         input1, input2, target)
    return reduce(values, reduction)


def _signs(g: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    return np.where(g.random(shape) < 0.5, -1, 1).astype(dtype)


@register_cases
def margin_cases() -> Iterator[Case]:
    """The three +-1-target losses on five shapes and several margins; targets other than +-1."""
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


# --- Losses over classes -----------------------------------------------------------


def _log_sigmoid(z: float) -> float:
    """log(1 / (1 + e^-z)) without overflow."""
    return -_log1p_exp(-z)


@reference("multilabel_soft_margin_loss")
def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
    """Per sample, the (weighted) logistic loss of every class, averaged over the classes."""
    input = np.asarray(input, dtype=np.float64)
    weight = np.ones(input.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    x, y, w = np.broadcast_arrays(input, np.asarray(target, dtype=np.float64), weight)
    n_classes = input.shape[-1]
    out = np.empty(x.shape[:-1])
    for idx in np.ndindex(out.shape):
        terms = [
            -wc * (yc * _log_sigmoid(xc) + (1.0 - yc) * _log_sigmoid(-xc))
            for xc, yc, wc in zip(x[idx].tolist(), y[idx].tolist(), w[idx].tolist(), strict=True)
        ]
        out[idx] = math.fsum(terms) / n_classes if n_classes else float("nan")
    return reduce(out, reduction)


def _multilabel_margin_row(x: list[float], targets: list[int]) -> float:
    listed = []
    for t in targets:
        if t < 0:
            break
        listed.append(t)  # a class listed twice is counted twice
    others = [i for i in range(len(x)) if i not in set(listed)]
    terms = [1.0 - (x[j] - x[i]) for j in listed for i in others]
    return math.fsum(z for z in terms if z > 0) / len(x)


@reference("multilabel_margin_loss")
def multilabel_margin_loss(input, target, reduction="mean"):
    """Per sample, the hinge of each listed class against each unlisted one, over C."""
    input, target = np.asarray(input, dtype=np.float64), np.asarray(target)
    if input.ndim <= 1:  # one sample; the result is 0-d whatever the reduction
        return np.asarray(_multilabel_margin_row(input.reshape(-1).tolist(),
                                                 target.reshape(-1).tolist()))
    rows = [_multilabel_margin_row(x, t)
            for x, t in zip(input.tolist(), target.tolist(), strict=True)]
    return reduce(np.asarray(rows, dtype=np.float64), reduction)


def _multi_margin_row(x: list[float], y: int, p: int, margin: float, weight) -> float:
    hinges = [margin - x[y] + x[i] for i in range(len(x)) if i != y]
    total = math.fsum(z**p for z in hinges if z > 0)
    scale = 1.0 if weight is None else float(weight[y])
    return scale * total / len(x)


@reference("multi_margin_loss")
def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """Per sample, ``max(0, margin - x[y] + x[i])**p`` summed over i != y, weighted, over C."""
    input, target = np.asarray(input, dtype=np.float64), np.asarray(target)
    rows = input.reshape(-1, 1 if input.ndim == 0 else input.shape[-1]).tolist()
    targets = target.reshape(-1).tolist()
    values = np.asarray([_multi_margin_row(x, int(y), p, margin, weight)
                         for x, y in zip(rows, targets, strict=True)], dtype=np.float64)
    if reduction == "none":
        return values.reshape(target.shape)
    return reduce(values, reduction)


#: Multi-label targets: lists ending at the first -1, duplicates, entries after the end,
#: an empty list (-1 first) and a full list.
_MULTILABEL_TARGETS = np.asarray([
    [3, 0, -1, 1, 4],
    [1, 1, 2, -1, 0],
    [-1, 2, 0, 0, 1],
    [0, 1, 2, 3, 4],
    [4, 4, -1, -1, -1],
    [2, -1, 3, 3, 3],
])


@register_cases
def class_margin_cases() -> Iterator[Case]:
    """The three losses over classes: weights, multi-label lists, 1-d and empty inputs."""
    g = rng(260)
    for shape in ((6, 5), (5,), (2, 3, 4), (0, 3)):
        x = 2 * g.standard_normal(shape)
        labels = (g.random(shape) < 0.4).astype(np.float64)
        weight = g.uniform(0.2, 2.0, shape[-1:])
        for reduction in REDUCTIONS:
            yield Case("multilabel_soft_margin_loss", {"input": x, "target": labels},
                       {"reduction": reduction})
            if shape == (6, 5) or reduction == "none":
                yield Case("multilabel_soft_margin_loss",
                           {"input": x, "target": labels, "weight": weight},
                           {"reduction": reduction}, label="weighted",
                           differentiable=("input", "weight"))
    x = 2 * g.standard_normal((4, 3))
    yield Case("multilabel_soft_margin_loss", {"input": x, "target": g.integers(0, 2, (4, 3))},
               label="integer-target")

    x = g.standard_normal((6, 5))
    for reduction in REDUCTIONS:
        yield Case("multilabel_margin_loss", {"input": x, "target": _MULTILABEL_TARGETS},
                   {"reduction": reduction})
        yield Case("multilabel_margin_loss",
                   {"input": x[0], "target": _MULTILABEL_TARGETS[1]},
                   {"reduction": reduction}, label="1d")
    yield Case("multilabel_margin_loss",
               {"input": g.standard_normal((0, 5)), "target": np.zeros((0, 5), dtype=np.int64)},
               {"reduction": "none"}, label="empty")

    x = 2 * g.standard_normal((7, 4))
    target = g.integers(0, 4, 7)
    weight = g.uniform(0.2, 2.0, 4)
    for reduction in REDUCTIONS:
        for p in (1, 2):
            for margin in (1.0, 0.3) if p == 1 else (1.0,):
                yield Case("multi_margin_loss", {"input": x, "target": target},
                           {"reduction": reduction, "p": p, "margin": margin})
            yield Case("multi_margin_loss", {"input": x, "target": target, "weight": weight},
                       {"reduction": reduction, "p": p, "margin": 0.7}, label="weighted")
        yield Case("multi_margin_loss", {"input": x[0], "target": target[0]},
                   {"reduction": reduction}, label="1d")
        yield Case("multi_margin_loss", {"input": x[1], "target": target[1:2]},
                   {"reduction": reduction, "p": 2}, label="1d-target1")
    yield Case("multi_margin_loss",
               {"input": g.standard_normal((0, 4)), "target": np.zeros(0, dtype=np.int64)},
               {"reduction": "none"}, label="empty")
