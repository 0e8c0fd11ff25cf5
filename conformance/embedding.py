"""Cases and float64 references of the embedding losses and ``pairwise_distance``.

The references work one vector at a time with Python floats: a p-norm is a
sum of powers (or a count, a max, a min), a cosine is a dot product over two
norms, each written out in full.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, reduce, reference, register_cases, rng


def _norm(values: list[float], p: float) -> float:
    magnitudes = [abs(v) for v in values]
    if p == 0:
        return float(sum(1 for m in magnitudes if m != 0))
    if p == math.inf:
        return max(magnitudes)
    if p == -math.inf:
        return min(magnitudes)
    powers = [(m**p if m != 0 else (0.0 if p > 0 else math.inf)) for m in magnitudes]
    return math.fsum(powers) ** (1.0 / p)


@reference("pairwise_distance")
def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """The p-norm of ``x1 - x2 + eps`` along the last axis."""
    a, b = np.broadcast_arrays(np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64))
    if a.ndim == 0:
        return np.asarray(_norm([a.item() - b.item() + eps], p))
    out = np.empty(a.shape[:-1])
    for idx in np.ndindex(out.shape):
        differences = zip(a[idx].tolist(), b[idx].tolist(), strict=True)
        out[idx] = _norm([u - v + eps for u, v in differences], p)
    return out[..., None] if keepdim else out


#: torch adds 1e-12 held in single precision: 1e-12 rounded to float32.
_COSINE_EPSILON = float(np.float32(1e-12))


def _cosine(u: list[float], v: list[float]) -> float:
    dot = math.fsum(a * b for a, b in zip(u, v, strict=True))
    squared_u = math.fsum(a * a for a in u) + _COSINE_EPSILON
    squared_v = math.fsum(b * b for b in v) + _COSINE_EPSILON
    return dot / math.sqrt(squared_u * squared_v)


@reference("cosine_embedding_loss")
def cosine_embedding_loss(input1, input2, target, margin=0.0, reduction="mean"):
    """``1 - cos`` for target 1, ``max(0, cos - margin)`` for -1, 0 for any other target."""
    a, b = np.broadcast_arrays(np.asarray(input1, dtype=np.float64),
                               np.asarray(input2, dtype=np.float64))
    rows = zip(a.reshape(-1, a.shape[-1]).tolist(), b.reshape(-1, b.shape[-1]).tolist(),
               strict=True)
    cos = np.asarray([_cosine(u, v) for u, v in rows])
    cos = cos.reshape(a.shape[:-1])
    cos, target = np.broadcast_arrays(cos, np.asarray(target))
    out = np.zeros(cos.shape)
    for idx in np.ndindex(out.shape):
        if target[idx] == 1:
            out[idx] = 1.0 - cos[idx]
        elif target[idx] == -1:
            out[idx] = max(0.0, cos[idx] - margin)
    return reduce(out, reduction)


def _triplets(distance, anchor, positive, negative, margin, swap):
    to_positive = distance(anchor, positive)
    to_negative = distance(anchor, negative)
    if swap:
        to_negative = np.minimum(to_negative, distance(positive, negative))
    return np.maximum(margin + to_positive - to_negative, 0.0)


@reference("triplet_margin_loss")
def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        reduction="mean"):
    """The triplet hinge with :func:`pairwise_distance` of norm ``p`` as the distance."""
    def distance(u, v):
        return pairwise_distance(u, v, p, eps)

    return reduce(_triplets(distance, anchor, positive, negative, margin, swap), reduction)


@reference("triplet_margin_with_distance_loss")
def triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=None,
                                      margin=1.0, swap=False, reduction="mean"):
    """The triplet hinge with any distance (:func:`pairwise_distance` by default)."""
    distance = pairwise_distance if distance_function is None else distance_function
    return reduce(_triplets(distance, anchor, positive, negative, margin, swap), reduction)


def _with_zero_row(g: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` perturbed everywhere but in row 0, where it equals ``x``."""
    y = x + g.standard_normal(x.shape)
    y[0] = x[0]
    return y


@register_cases
def embedding_cases() -> Iterator[Case]:
    """Distances of every p (equal rows included), cosine pairs, triplets with and without swap."""
    both = ("x1", "x2")
    g = rng(300)
    for shape1, shape2 in (((5, 4), (5, 4)), ((5, 4), (4,)), ((), ()), ((6,), (6,)),
                           ((2, 3, 4), (2, 3, 4)), ((0, 3), (0, 3))):
        x1, x2 = g.standard_normal(shape1), g.standard_normal(shape2)
        # Every p on the first shapes; Euclidean and one other on the rest. torch
        # refuses the max of an empty dimension.
        powers = (2.0, 1.0, 3.0, 0.5, math.inf) if shape1 == (5, 4) else (2.0, 1.0)
        for p in powers:
            yield Case("pairwise_distance", {"x1": x1, "x2": x2}, {"p": p},
                       differentiable=both)
        yield Case("pairwise_distance", {"x1": x1, "x2": x2}, {"keepdim": True},
                   differentiable=both)
    x1, x2 = g.standard_normal((4, 5)), g.standard_normal((4, 5))
    for p in (0.0, -1.0, -math.inf):
        # torch gives no gradient at all for p = 0 (a count of non-zeros).
        yield Case("pairwise_distance", {"x1": x1, "x2": x2}, {"p": p, "eps": 1e-3},
                   differentiable=both if p else ())
    zero_row = _with_zero_row(g, x1)
    for p in (2.0, 1.0, 3.0, 0.5, math.inf):
        yield Case("pairwise_distance", {"x1": x1, "x2": zero_row}, {"p": p, "eps": 0.0},
                   label="equal-rows", differentiable=both)

    pair = ("input1", "input2")
    x1, x2 = g.standard_normal((6, 4)), g.standard_normal((6, 4))
    x1[2] = 0.0  # a zero vector: cos = 0
    x1[3] *= 1e-7  # a tiny vector, whose cosine shows the epsilon's exact value
    targets = np.asarray([1.0, -1.0, 1.0, -1.0, 0.0, -1.0])
    for reduction in REDUCTIONS:
        for margin in (0.0, 0.3, -0.2):
            yield Case("cosine_embedding_loss", {"input1": x1, "input2": x2, "target": targets},
                       {"reduction": reduction, "margin": margin}, differentiable=pair)
        yield Case("cosine_embedding_loss",
                   {"input1": x1[0], "input2": x2[0], "target": np.asarray(-1)},
                   {"reduction": reduction, "margin": -0.5}, label="1d", differentiable=pair)
        yield Case("cosine_embedding_loss",
                   {"input1": np.zeros((0, 4)), "input2": np.zeros((0, 4)),
                    "target": np.zeros(0)}, {"reduction": reduction}, label="empty",
                   differentiable=pair)
    yield Case("cosine_embedding_loss",
               {"input1": x1, "input2": x2[:1], "target": targets.astype(np.int64)},
               label="broadcast-integer-target", differentiable=pair)
    yield Case("cosine_embedding_loss",
               {"input1": x1, "input2": x2, "target": np.asarray([1.0])},
               {"reduction": "none"}, label="broadcast-target", differentiable=pair)

    triplet = ("anchor", "positive", "negative")
    for shape in ((6, 4), (4,), (2, 3, 4), (0, 4)):
        a, pos, neg = (g.standard_normal(shape) for _ in range(3))
        arrays = {"anchor": a, "positive": pos, "negative": neg}
        for reduction in REDUCTIONS:
            if shape == (6, 4):
                yield Case("triplet_margin_loss", arrays, {"reduction": reduction},
                           differentiable=triplet)
            yield Case("triplet_margin_loss", arrays,
                       {"reduction": reduction, "margin": 2.0, "swap": True},
                       differentiable=triplet)
            yield Case("triplet_margin_with_distance_loss", arrays,
                       {"reduction": reduction, "margin": 1.5, "swap": shape != (4,)},
                       differentiable=triplet)
        yield Case("triplet_margin_with_distance_loss", arrays, differentiable=triplet)
    a, pos, neg = (g.standard_normal((6, 4)) for _ in range(3))
    for p, eps in ((1.0, 1e-6), (3.0, 0.0), (0.5, 1e-6), (math.inf, 1e-6)):
        for swap in (False, True):
            yield Case("triplet_margin_loss", {"anchor": a, "positive": pos, "negative": neg},
                       {"p": p, "eps": eps, "swap": swap, "margin": 0.5},
                       differentiable=triplet)
    yield Case("triplet_margin_loss",
               {"anchor": a, "positive": pos[:1], "negative": neg},
               {"reduction": "none"}, label="broadcast", differentiable=triplet)
