"""Cases and the float64 reference of ``linear_cross_entropy`` (torch 2.13).

The reference is the definition: each logit an exact (``math.fsum``) dot product
of an input row and a weight row plus the bias, then the cross-entropy reference
of :mod:`.classification` on those logits. It shares no code with anyloss.

Its magnitude (:func:`~.catalogue.absolute_terms`) adds what the logits' own
rounding can move the loss by: a logit computed in the dtype under test is off by
up to ``eps * (sum_i |x_i w_ki| + |b_k|)``, and a loss moves by at most twice the
largest logit error times the largest class weight (once through the
log-sum-exp, once through the target's logit or the smoothing sum). Without it, a
near-certain class (a loss of 1e-3 from logits of 10) would be judged against
digits that no float32 matmul keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from . import catalogue
from .catalogue import REDUCTIONS, Case, reference, register_cases, rng
from .classification import cross_entropy


@reference("linear_cross_entropy")
def linear_cross_entropy(input, linear_weight, target, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=None, label_smoothing=0.0,
                         options=None):
    """``cross_entropy(input @ W.T + b, target)`` with exact dot products."""
    x = np.asarray(input, dtype=np.float64)
    w = np.asarray(linear_weight, dtype=np.float64)
    rows = x.reshape(-1, x.shape[-1])
    flat = w.reshape(-1, w.shape[-1])
    bias = None if linear_bias is None else np.asarray(linear_bias, np.float64).reshape(-1)
    logits = np.asarray([
        [math.fsum(float(a) * float(b) for a, b in zip(row, w_row, strict=True))
         + (0.0 if bias is None else float(bias[k])) for k, w_row in enumerate(flat)]
        for row in rows])
    logits = logits.reshape((*x.shape[:-1], *w.shape[:-1]))
    value = cross_entropy(logits, target, weight,
                          ignore_index=-100 if ignore_index is None else ignore_index,
                          reduction=reduction, label_smoothing=label_smoothing)
    if not catalogue._absolute:
        return value
    # The magnitude: the loss's own terms, plus the logits' rounding (module docstring).
    largest_logit_terms = max(
        math.fsum(abs(float(a) * float(b)) for a, b in zip(row, w_row, strict=True))
        + (0.0 if bias is None else abs(float(bias[k])))
        for row in rows for k, w_row in enumerate(flat))
    largest_weight = 1.0 if weight is None else float(np.max(np.abs(weight)))
    per_position = 2.0 * largest_weight * largest_logit_terms
    positions = math.prod(logits.shape) // max(1, w.shape[0])
    if reduction == "sum":
        return value + per_position * positions
    return value + per_position


@register_cases
def linear_cross_entropy_cases() -> Iterator[Case]:
    """Every option on (N, D) inputs; K-dimensional logits, unbatched input, probabilities."""
    g = rng(1300)
    n, d, c = 6, 4, 5
    x = g.standard_normal((n, d))
    w = g.standard_normal((c, d))
    b = g.standard_normal(c)
    weight = g.uniform(0.2, 2.0, c)
    target = g.integers(0, c, n)
    ignored = np.where(np.arange(n) % 3 == 0, 2, target)
    probs = g.dirichlet(np.ones(c), size=n)
    w3, b3 = g.standard_normal((c, 2, d)), g.standard_normal((c, 2))
    target3 = g.integers(0, c, (n, 2))
    differentiable = ("input", "linear_weight")
    floats = ("float64", "float32")
    for reduction in REDUCTIONS:
        yield Case("linear_cross_entropy", {"input": x, "linear_weight": w, "target": target},
                   {"reduction": reduction}, differentiable=differentiable, dtypes=floats)
        yield Case("linear_cross_entropy",
                   {"input": x, "linear_weight": w, "target": ignored, "linear_bias": b,
                    "weight": weight},
                   {"reduction": reduction, "ignore_index": 2, "label_smoothing": 0.2},
                   label="bias-weighted-ignore-smoothing",
                   differentiable=(*differentiable, "linear_bias"), dtypes=floats)
        yield Case("linear_cross_entropy",
                   {"input": x, "linear_weight": w3, "target": target3, "linear_bias": b3},
                   {"reduction": reduction}, label="k-dim",
                   differentiable=(*differentiable, "linear_bias"), dtypes=floats)
        yield Case("linear_cross_entropy", {"input": x, "linear_weight": w, "target": probs},
                   {"reduction": reduction, "label_smoothing": 0.1}, label="probabilities",
                   differentiable=differentiable, dtypes=floats)
        yield Case("linear_cross_entropy",
                   {"input": x[0], "linear_weight": w, "target": target[0]},
                   {"reduction": reduction}, label="unbatched",
                   differentiable=differentiable, dtypes=floats)
