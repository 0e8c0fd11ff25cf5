"""Cases and float64 references of the classification losses.

``nll_loss``, ``cross_entropy``, ``binary_cross_entropy`` and
``binary_cross_entropy_with_logits``. The references walk over positions and
classes with Python floats (``math.log``, ``math.exp``, ``math.fsum``), one
obvious line of math per term, and share no code with anyloss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .catalogue import (
    REDUCTIONS,
    Case,
    elementwise,
    plus,
    reduce,
    reference,
    register_cases,
    rng,
    terms_sum,
)


def _legacy(reduction, size_average, reduce_):
    """torch's mapping of the deprecated size_average/reduce pair (None counts as True)."""
    if size_average is None and reduce_ is None:
        return reduction
    if reduce_ is False:
        return "none"
    return "sum" if size_average is False else "mean"


def _positions(input, target):
    """(log-)scores as a list of per-position class vectors, and the target per position.

    The class axis is 1 (0 for an unbatched input); positions run over the other axes
    in C order, which is the order of the unreduced loss.
    """
    x = np.asarray(input, dtype=np.float64)
    if x.ndim == 1:
        t = np.asarray(target)
        single = t.tolist() if t.shape == x.shape else t.reshape(-1)[0].item()
        return [x.tolist()], [single], ()
    classes_last = np.moveaxis(x, 1, -1)
    shape = classes_last.shape[:-1]
    t = np.asarray(target)
    if t.shape == x.shape:  # class probabilities
        t_last = np.moveaxis(t, 1, -1)
        targets = [t_last[idx].tolist() for idx in np.ndindex(shape)]
    else:
        targets = [t[idx].item() for idx in np.ndindex(shape)]
    return [classes_last[idx].tolist() for idx in np.ndindex(shape)], targets, shape


def _log_softmax(scores):
    top = max(scores)
    log_norm = top + math.log(math.fsum(math.exp(s - top) for s in scores))
    return [s - log_norm for s in scores]


def _class_index_reduction(losses, weights, shape, reduction):
    if reduction == "none":
        return reduce(np.asarray(losses, dtype=np.float64).reshape(shape), "none")
    total = terms_sum(losses)
    if reduction == "sum":
        return np.asarray(total)
    weight_sum = math.fsum(weights)
    return np.asarray(total / weight_sum if weight_sum != 0 else float("nan"))


@reference("nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Minus the (weighted) log-probability of each target class; 'mean' over the kept weights."""
    reduction = _legacy(reduction, size_average, reduce)
    rows, targets, shape = _positions(input, target)
    losses, weights = [], []
    for row, t in zip(rows, targets, strict=True):
        if t == ignore_index:
            losses.append(0.0)
            weights.append(0.0)
            continue
        w = 1.0 if weight is None else float(weight[t])
        losses.append(-w * row[t])
        weights.append(w)
    return _class_index_reduction(losses, weights, shape, reduction)


@reference("cross_entropy")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Log-softmax of each position's scores against a class index or a probability vector."""
    reduction = _legacy(reduction, size_average, reduce)
    rows, targets, shape = _positions(input, target)
    n_classes = np.asarray(input).shape[0 if np.ndim(input) == 1 else 1]
    w = [1.0] * n_classes if weight is None else [float(v) for v in weight]
    eps = label_smoothing
    if np.shape(input) == np.shape(target):
        losses = []
        for row, probs in zip(rows, targets, strict=True):
            logp = _log_softmax(row)
            smoothed = [q * (1 - eps) + eps / n_classes for q in probs]
            losses.append(-math.fsum(w[c] * smoothed[c] * logp[c] for c in range(n_classes)))
        return reduce_(losses, shape, reduction)
    losses, weights = [], []
    for row, t in zip(rows, targets, strict=True):
        if t == ignore_index:
            losses.append(0.0)
            weights.append(0.0)
            continue
        logp = _log_softmax(row)
        uniform = math.fsum(-w[c] * logp[c] for c in range(n_classes))
        nll = -w[t] * logp[t]  # -0.0 for a certain class, as torch's nll_loss gives
        losses.append(nll if eps == 0 else (1 - eps) * nll + eps / n_classes * uniform)
        weights.append(w[t])
    return _class_index_reduction(losses, weights, shape, reduction)


def reduce_(losses, shape, reduction):
    """Reduce per-position losses laid out as ``shape`` (mean over positions)."""
    return reduce(np.asarray(losses, dtype=np.float64).reshape(shape), reduction)


def _clamped_log(v: float) -> float:
    return -100.0 if v <= 0 else max(math.log(v), -100.0)


def _clamped_log1p(v: float) -> float:
    return -100.0 if v <= -1 else max(math.log1p(v), -100.0)


def _bce(x: float, y: float) -> float:
    # torch's order of operations, which decides the sign of a zero loss.
    return plus((y - 1) * _clamped_log1p(-x), -y * _clamped_log(x))


@reference("binary_cross_entropy")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """``-(y log x + (1 - y) log(1 - x))`` per element, each log clamped at -100."""
    reduction = _legacy(reduction, size_average, reduce)
    if weight is None:
        values = elementwise(_bce, input, target)
    else:
        values = elementwise(lambda x, y, w: w * _bce(x, y), input, target, weight)
    return reduce_(values.ravel(), values.shape, reduction)


def _softplus(z: float) -> float:
    """log(1 + e^z) without overflow."""
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def _bce_logits(x: float, y: float, w: float, p: float) -> float:
    # -w [p y log(sigmoid(x)) + (1 - y) log(1 - sigmoid(x))], with
    # log(sigmoid(x)) = -softplus(-x) and log(1 - sigmoid(x)) = -x - softplus(-x): torch's
    # form, (1 - y) x + (1 + (p - 1) y) softplus(-x), which decides where nan and inf fall
    # (y = inf, x < 0 is inf; x = -inf, y = 1 is 0 * inf = nan).
    return w * plus((1 - y) * x, (1 + (p - 1) * y) * _softplus(-x))


def _bce_logits_unweighted(x: float, y: float, w: float) -> float:
    # Without pos_weight torch has no (p - 1) y term (0 * inf would make y = inf nan).
    return w * plus((1 - y) * x, _softplus(-x))


@reference("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Binary cross entropy of ``sigmoid(x)``, by softplus; ``pos_weight`` scales the y term."""
    reduction = _legacy(reduction, size_average, reduce)
    weight = 1.0 if weight is None else weight
    if pos_weight is None:
        values = elementwise(_bce_logits_unweighted, input, target, weight)
    else:
        values = elementwise(_bce_logits, input, target, weight, pos_weight)
    return reduce_(values.ravel(), values.shape, reduction)


# --- cases ----------------------------------------------------------------------------

#: (input shape, target shape) of the class-index losses: batched, unbatched, K-dim
#: with K = 1, 2, 3, and an empty batch.
CLASS_SHAPES = (
    ((5, 4), (5,)),
    ((4,), ()),
    ((2, 3, 4), (2, 4)),
    ((2, 3, 2, 2), (2, 2, 2)),
    ((2, 3, 2, 1, 2), (2, 2, 1, 2)),
    ((0, 4), (0,)),
)


def _class_targets(g, shape, n_classes, ignore=None, every_class=True):
    """Class indices of ``shape``; ``ignore`` (if given) replaces about a third of them."""
    t = g.integers(0, n_classes, size=shape)
    if every_class and t.size >= n_classes:
        flat = t.reshape(-1)
        flat[:n_classes] = np.arange(n_classes)
        t = g.permutation(flat).reshape(shape)
    if ignore is not None and t.size:
        mask = np.asarray(g.random(shape) < 0.35)
        mask.reshape(-1)[0] = True
        t = np.where(mask, ignore, t)
    return np.asarray(t, dtype=np.int64)


def _log_probs(g, shape):
    x = g.standard_normal(shape)
    if len(shape) == 0:
        return x
    axis = 0 if len(shape) == 1 else 1
    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


@register_cases
def nll_cases() -> Iterator[Case]:
    """Every :data:`CLASS_SHAPES` entry with and without weight, ignored and legacy targets."""
    for seed, (input_shape, target_shape) in enumerate(CLASS_SHAPES):
        g = rng(300 + seed)
        n_classes = input_shape[0 if len(input_shape) == 1 else 1]
        logp = _log_probs(g, input_shape)
        weight = g.uniform(0.2, 2.0, n_classes)
        target = _class_targets(g, target_shape, n_classes)
        for reduction in REDUCTIONS:
            yield Case("nll_loss", {"input": logp, "target": target}, {"reduction": reduction})
            yield Case("nll_loss", {"input": logp, "target": target, "weight": weight},
                       {"reduction": reduction}, label="weighted")
        # ignore_index: a valid class, out of range (255), negative (-1); all three on
        # the (N, C) shape, 255 with a weight on the others.
        for ignore in (1, 255, -1) if seed == 0 else (255,):
            if input_shape[0] == 0:
                continue
            ignored = _class_targets(g, target_shape, n_classes, ignore=ignore)
            for reduction in REDUCTIONS:
                if seed == 0:
                    yield Case("nll_loss", {"input": logp, "target": ignored},
                               {"reduction": reduction, "ignore_index": ignore}, label="ignore")
                yield Case("nll_loss", {"input": logp, "target": ignored, "weight": weight},
                           {"reduction": reduction, "ignore_index": ignore},
                           label="ignore-weighted")
    g = rng(320)
    logp = _log_probs(g, (3, 4))
    all_ignored = np.full(3, -100, dtype=np.int64)
    for reduction in REDUCTIONS:
        yield Case("nll_loss", {"input": logp, "target": all_ignored},
                   {"reduction": reduction}, label="all-ignored")
        yield Case("nll_loss",
                   {"input": logp, "target": all_ignored, "weight": g.uniform(0.5, 1.5, 4)},
                   {"reduction": reduction}, label="all-ignored-weighted")
    target = _class_targets(g, (3,), 4)
    for legacy in ({"size_average": False}, {"reduce": False}, {"size_average": True}):
        yield Case("nll_loss", {"input": logp, "target": target}, legacy, label="legacy")


@register_cases
def cross_entropy_cases() -> Iterator[Case]:
    """Class indices and probabilities, label smoothing, ignored targets, logits of +-1e4."""
    for seed, (input_shape, target_shape) in enumerate(CLASS_SHAPES):
        g = rng(400 + seed)
        n_classes = input_shape[0 if len(input_shape) == 1 else 1]
        logits = 3 * g.standard_normal(input_shape)
        weight = g.uniform(0.2, 2.0, n_classes)
        target = _class_targets(g, target_shape, n_classes)
        ignore = (2, 255, 255, -1, 255, 2)[seed]  # a valid class, out of range, negative
        ignored = _class_targets(g, target_shape, n_classes, ignore=ignore)
        probs = g.dirichlet(np.ones(n_classes), size=target_shape) if target_shape else \
            g.dirichlet(np.ones(n_classes))
        probs = np.moveaxis(np.asarray(probs), -1, 1 if len(input_shape) > 1 else 0)
        # Every option on (N, C); the 4-D, 5-D and empty inputs (whose paths nll_loss's
        # cases cover) get the combined ones only.
        full = input_shape in ((5, 4), (4,), (2, 3, 4))
        for reduction in REDUCTIONS:
            yield Case("cross_entropy", {"input": logits, "target": target},
                       {"reduction": reduction})
            if full:
                yield Case("cross_entropy",
                           {"input": logits, "target": target, "weight": weight},
                           {"reduction": reduction}, label="weighted")
            # Label smoothing with weight and ignored targets on every shape; the
            # variants without weight or without ignored targets on (N, C) only.
            yield Case("cross_entropy",
                       {"input": logits, "target": ignored, "weight": weight},
                       {"reduction": reduction, "ignore_index": ignore,
                        "label_smoothing": 0.25}, label="smoothing-weighted-ignore")
            if seed == 0:
                for smoothing in (0.1, 1.0):
                    yield Case("cross_entropy", {"input": logits, "target": target},
                               {"reduction": reduction, "label_smoothing": smoothing},
                               label="smoothing")
                yield Case("cross_entropy", {"input": logits, "target": ignored},
                           {"reduction": reduction, "ignore_index": ignore}, label="ignore")
                yield Case("cross_entropy", {"input": logits, "target": ignored},
                           {"reduction": reduction, "ignore_index": ignore,
                            "label_smoothing": 0.3}, label="smoothing-ignore")
            # Class probabilities.
            both = ("input", "target")
            if full:
                yield Case("cross_entropy", {"input": logits, "target": probs},
                           {"reduction": reduction}, label="probabilities",
                           differentiable=both)
            yield Case("cross_entropy", {"input": logits, "target": probs, "weight": weight},
                       {"reduction": reduction, "label_smoothing": 0.2},
                       label="probabilities-weighted-smoothing",
                       differentiable=("input", "target", "weight"))
            if seed == 0:
                yield Case("cross_entropy", {"input": logits, "target": probs},
                           {"reduction": reduction, "label_smoothing": 0.6, "ignore_index": -1},
                           label="probabilities-smoothing", differentiable=both)
    # Every target ignored: 'mean' is nan, 'sum' 0, with and without smoothing and weight.
    g = rng(420)
    logits = g.standard_normal((3, 4))
    all_ignored = np.full(3, -100, dtype=np.int64)
    weight = g.uniform(0.5, 1.5, 4)
    for reduction in REDUCTIONS:
        yield Case("cross_entropy", {"input": logits, "target": all_ignored},
                   {"reduction": reduction}, label="all-ignored")
        yield Case("cross_entropy", {"input": logits, "target": all_ignored, "weight": weight},
                   {"reduction": reduction, "label_smoothing": 0.1},
                   label="all-ignored-weighted-smoothing")
    # Logits of +-1e4: no overflow, exact answers.
    huge = np.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4], [5e3, -1e4, 1e4]])
    huge_target = np.asarray([0, 0, 1, 2], dtype=np.int64)
    huge_probs = np.asarray([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0],
                             [0.0, 0.1, 0.9]])
    for reduction in REDUCTIONS:
        # A certain class costs -0.0 in torch; Dask's kernel (backends/dask.py) gives +0.0.
        yield Case("cross_entropy", {"input": huge, "target": huge_target},
                   {"reduction": reduction}, label="logits-1e4", signed_zeros=False)
        yield Case("cross_entropy", {"input": huge, "target": huge_target, "weight": weight[:3]},
                   {"reduction": reduction, "label_smoothing": 0.1},
                   label="logits-1e4-smoothing")
        yield Case("cross_entropy", {"input": huge, "target": huge_probs},
                   {"reduction": reduction}, label="logits-1e4-probabilities",
                   differentiable=("input", "target"))
    target = _class_targets(g, (3,), 4)
    for legacy in ({"size_average": False}, {"reduce": False}):
        yield Case("cross_entropy", {"input": logits, "target": target}, legacy, label="legacy")
        yield Case("cross_entropy", {"input": logits, "target": g.dirichlet(np.ones(4), 3)},
                   legacy, label="legacy-probabilities")


#: Input shapes of the binary losses, and weight shapes that broadcast to each.
BINARY_SHAPES = (
    ((3, 4), ((4,), (3, 1))),
    ((), ((),)),
    ((2, 3, 4), ((2, 1, 4),)),
    ((0, 3), ((3,),)),
)


@register_cases
def binary_cross_entropy_cases() -> Iterator[Case]:
    """Soft and hard targets, broadcast weights, ``pos_weight``, clamped logs, large logits."""
    for seed, (shape, weight_shapes) in enumerate(BINARY_SHAPES):
        g = rng(500 + seed)
        probs = g.uniform(0.02, 0.98, shape)
        target = g.uniform(0.0, 1.0, shape)
        hard = (g.random(shape) < 0.5).astype(np.float64)
        logits = 3 * g.standard_normal(shape)
        both = ("input", "target")
        for reduction in REDUCTIONS:
            options = {"reduction": reduction}
            yield Case("binary_cross_entropy", {"input": probs, "target": target}, options,
                       differentiable=both)
            if seed == 0:
                yield Case("binary_cross_entropy", {"input": probs, "target": hard}, options,
                           label="hard-targets", differentiable=both)
            yield Case("binary_cross_entropy_with_logits", {"input": logits, "target": target},
                       options, differentiable=both)
            for weight_shape in weight_shapes:
                weight = g.uniform(0.2, 2.0, weight_shape)
                label = f"weight{weight_shape}".replace(" ", "")
                yield Case("binary_cross_entropy",
                           {"input": probs, "target": target, "weight": weight}, options,
                           label=label, differentiable=both)
                yield Case("binary_cross_entropy_with_logits",
                           {"input": logits, "target": target, "weight": weight}, options,
                           label=label, differentiable=both)
            if seed in (0, 2):
                pos_weight = g.uniform(0.2, 3.0, shape[-1:])
                yield Case("binary_cross_entropy_with_logits",
                           {"input": logits, "target": hard, "pos_weight": pos_weight}, options,
                           label="pos-weight", differentiable=both)
                yield Case("binary_cross_entropy_with_logits",
                           {"input": logits, "target": target,
                            "weight": g.uniform(0.2, 2.0, shape[-1:]), "pos_weight": pos_weight},
                           options, label="weight-pos-weight", differentiable=both)
    g = rng(520)
    # Probabilities at and beyond the clamp: log(0) and log(1e-60) are clamped at -100.
    # No gradient check: torch's hand-written gradients ignore its own clamp here
    # (inf with respect to the target at 0, (x - y) / 1e-12 with respect to the input).
    edge = np.asarray([[0.0, 1.0, 1e-60, 1 - 1e-16], [0.5, 0.0, 1.0, 1e-300]])
    edge_target = np.asarray([[1.0, 0.0, 1.0, 0.0], [0.3, 0.0, 1.0, 0.7]])
    for reduction in REDUCTIONS:
        yield Case("binary_cross_entropy", {"input": edge, "target": edge_target},
                   {"reduction": reduction}, label="clamped-log", differentiable=())
    # Logits of magnitude 100 and more: finite, and exact on both sides.
    big = np.asarray([[100.0, -100.0, 1e3, -1e3], [1e4, -1e4, 250.0, -250.0]])
    big_target = np.asarray([[1.0, 0.0, 0.0, 1.0], [0.3, 0.7, 1.0, 0.0]])
    for reduction in REDUCTIONS:
        yield Case("binary_cross_entropy_with_logits", {"input": big, "target": big_target},
                   {"reduction": reduction}, label="logits-100",
                   differentiable=("input", "target"))
        yield Case("binary_cross_entropy_with_logits",
                   {"input": big, "target": big_target,
                    "pos_weight": g.uniform(0.5, 2.0, 4)},
                   {"reduction": reduction}, label="logits-100-pos-weight",
                   differentiable=("input", "target"))
    probs, target = g.uniform(0.05, 0.95, (3, 4)), g.uniform(0, 1, (3, 4))
    for legacy in ({"size_average": False}, {"reduce": False}):
        yield Case("binary_cross_entropy", {"input": probs, "target": target}, legacy,
                   label="legacy", differentiable=("input", "target"))
        yield Case("binary_cross_entropy_with_logits", {"input": probs, "target": target}, legacy,
                   label="legacy", differentiable=("input", "target"))
