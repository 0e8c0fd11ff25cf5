r"""Margin losses.

On ±1 targets: ``soft_margin_loss``, ``hinge_embedding_loss``,
``margin_ranking_loss``. Targets are meant to hold 1 or -1 (any real or integer
dtype). Shapes broadcast; the unreduced loss has the broadcast shape.

Over classes: ``multilabel_soft_margin_loss`` (one logistic loss per class,
averaged), ``multilabel_margin_loss`` (hinge between each listed class and every
unlisted one) and ``multi_margin_loss`` (hinge between the target class and
every other one). These reduce over the class (last) dimension first, so the
unreduced loss has one value per sample.
"""

from __future__ import annotations

import math
from typing import Any

from anyloss import _array, _blocked, _ops, _reduction, _registry
from anyloss._array import Array, float_dtype, isdtype, namespace, numpy_scalar_results
from anyloss._operands import elementwise_operands
from anyloss._registry import Kernel, kernels
from anyloss._validate import broadcast_shape, extrema, shape_text

__all__ = [
    "soft_margin_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "multilabel_soft_margin_loss",
    "multilabel_margin_loss",
    "multi_margin_loss",
]


@numpy_scalar_results
@kernels(
    Kernel("soft_margin_loss", "numpy", "first", "numpy.elementwise:soft_margin_loss",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape",
           needs="numba"),
)
def soft_margin_loss(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Two-class logistic loss, :math:`\ell_n = \log(1 + e^{-y_n x_n})`.

    Computed as ``-log_sigmoid(y x)`` (that is, ``softplus(-y x)``), which stays finite where
    :math:`e^{-y x}` overflows (torch's kernel returns inf there).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(soft_margin_loss(np.asarray([0.0]), np.asarray([1.0]))), 6)
    0.693147
    """
    xp, (input, target) = elementwise_operands(
        "soft_margin_loss", {"input": input, "target": target}
    )
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", "soft_margin_loss", xp, input, target, reduction=reduction)
    if loss is not NotImplemented:
        return loss

    def log_likelihood(x, y):  # -loss; the sign is applied once, after the reduction
        return _ops.log_sigmoid(xp, y * x)

    # 0 - (...) rather than -(...): a certain prediction's loss is +0.0, as torch's is.
    return 0.0 - _blocked.reduce_blockwise(xp, log_likelihood, (input, target), reduction)


@numpy_scalar_results
@kernels(
    Kernel("hinge_embedding_loss", "numpy", "first", "numpy.elementwise:hinge_embedding_loss",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape",
           needs="numba"),
)
def hinge_embedding_loss(
    input: Array,
    target: Array,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Hinge embedding loss, for learning whether two inputs are similar.

    .. math::

        \ell_n = [y_n \ne -1]\, x_n + [y_n \ne 1]\, \max(0, \mathrm{margin} - x_n)

    For targets of 1 and -1 this is the textbook
    :math:`x_n` if :math:`y_n = 1`, :math:`\max(0, \mathrm{margin} - x_n)` if
    :math:`y_n = -1`. Any other target value takes *both* terms, as torch does.
    The result has the input's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> hinge_embedding_loss(np.asarray([0.3, 0.3]), np.asarray([1, -1]), reduction="none")
    array([0.3, 0.7])
    """
    xp = namespace("hinge_embedding_loss", {"input": input, "target": target})
    float_dtype("hinge_embedding_loss", xp, input)
    broadcast_shape(input.shape, target.shape)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", "hinge_embedding_loss", xp, input, target, margin=margin,
                          reduction=reduction)
    if loss is not NotImplemented:
        return loss

    def hinge_embedding(x, y):
        hinge = xp.where(y != 1, _ops.relu(xp, margin - x), 0.0)
        return hinge + xp.where(y != -1, x, 0.0)

    return _blocked.reduce_blockwise(xp, hinge_embedding, (input, target), reduction)


@numpy_scalar_results
@kernels(
    Kernel("margin_ranking_loss", "numpy", "checked", "numpy.float16:margin_ranking_loss",
           "the formula in float32 (float16 converted by compiled loops, or NumPy's casts "
           "without numba)", "float16 NumPy arrays"),
)
def margin_ranking_loss(
    input1: Array,
    input2: Array,
    target: Array,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Ranking loss for pairs of inputs.

    .. math::

        \ell_n = \max(0, -y_n (x^{(1)}_n - x^{(2)}_n) + \mathrm{margin})

    ``target`` 1 means ``input1`` should rank higher, -1 that ``input2`` should.

    Raises
    ------
    ValueError
        When the three arrays do not have the same number of dimensions (torch
        refuses them even where they would broadcast).

    Examples
    --------
    >>> import numpy as np
    >>> margin_ranking_loss(np.asarray([1.0, 1.0]), np.asarray([0.0, 0.0]),
    ...                     np.asarray([1.0, -1.0]), reduction="none")
    array([0., 1.])
    """
    arrays = {"input1": input1, "input2": input2, "target": target}
    xp = namespace("margin_ranking_loss", arrays)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    if not input1.ndim == input2.ndim == target.ndim:
        raise ValueError(
            "margin_ranking_loss : All input tensors should have same dimension but got "
            f"sizes: input1: {tuple(input1.shape)}, input2: {tuple(input2.shape)}, "
            f"target: {tuple(target.shape)} "
        )
    xp, (input1, input2, target) = elementwise_operands("margin_ranking_loss", arrays)
    loss = _registry.call("checked", "margin_ranking_loss", xp, input1, input2, target,
                          margin=margin, reduction=reduction)
    if loss is not NotImplemented:
        return loss

    def ranking_hinge(x1, x2, y):  # margin - y (x1 - x2) is torch's -y (x1 - x2) + margin
        return _ops.relu(xp, margin - y * (x1 - x2))

    return _blocked.reduce_blockwise(xp, ranking_hinge, (input1, input2, target), reduction)


# --- Losses over classes -----------------------------------------------------------


def _class_positions(xp: Any, n: int, like: Any) -> Any:
    """``arange(n)`` in ``like``'s integer dtype, on ``like``'s device."""
    return xp.arange(n, dtype=like.dtype, device=_array.device(like))


def _require_class_indices(func: str, xp: Any, target: Any) -> None:
    if not isdtype(xp, target.dtype, "integral"):
        raise TypeError(
            f"{func}(): expected an integer target of class indices, got {target.dtype}"
        )


def _check_vector_or_matrix(input: Any) -> None:
    """The inputs these kernels take: (C), (N, C) with C > 0, or a 0-d input (C = 1)."""
    ndim = input.ndim
    valid = ndim == 0 or (ndim in (1, 2) and input.shape[-1] != 0)
    if not valid:
        raise ValueError(
            "Expected non-empty vector or matrix with optional 0-dim batch size, "
            f"but got: {shape_text(input.shape)}"
        )


@numpy_scalar_results
@kernels(
    Kernel("multilabel_soft_margin_loss", "numpy", "first",
           "numpy.elementwise:multilabel_soft_margin_loss", "one numba pass",
           "C-contiguous float32/64 (..., C) of one shape; (C,) weight",
           needs="numba"),
)
def multilabel_soft_margin_loss(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Multi-label one-versus-all logistic loss, averaged over the classes.

    Shapes: ``input`` (..., C), ``target`` of 0s and 1s broadcastable to it,
    ``weight`` (per class, or anything broadcastable). The unreduced loss drops
    the last dimension: shape (...).

    .. math::

        \ell_n = -\frac{1}{C} \sum_c w_c \bigl[ y_{nc} \log\sigma(x_{nc})
                 + (1 - y_{nc}) \log\sigma(-x_{nc}) \bigr]

    ``'mean'`` is the plain mean of :math:`\ell_n`, whatever the weights.
    :math:`\log\sigma` is computed without overflow for any finite logit.

    Raises
    ------
    IndexError
        For a 0-d input, which has no class dimension.
    ValueError
        ``"<reduction> is not valid"`` for an unknown reduction.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(multilabel_soft_margin_loss(np.zeros((1, 2)), np.asarray([[1.0, 0.0]]))), 6)
    0.693147
    """
    arrays = {"input": input, "target": target}
    if weight is not None:
        arrays["weight"] = weight
    xp, operands = elementwise_operands("multilabel_soft_margin_loss", arrays)
    try:
        reduction = _reduction.resolve(reduction, size_average, reduce)
    except ValueError:
        raise ValueError(f"{reduction} is not valid") from None
    if input.ndim == 0:
        raise IndexError("Dimension specified as -1 but tensor has no dimensions")
    n_classes = input.shape[-1]
    loss = _registry.call("first", "multilabel_soft_margin_loss", xp, operands[0], operands[1],
                          operands[2] if weight is not None else None, reduction=reduction)
    if loss is not NotImplemented:
        return loss

    def per_sample(x, y, *w):
        terms = y * _ops.log_sigmoid(xp, x) + (1.0 - y) * _ops.log_sigmoid(xp, -x)
        if w:
            terms = terms * w[0]
        # The class dimension is the last one (broadcasting only adds leading ones).
        return -_reduction.sum_along(xp, terms, terms.ndim - 1) / n_classes

    if input.ndim < 2:  # one sample: no rows to evaluate in blocks
        return _reduction.reduce(xp, per_sample(*operands), reduction)
    return _blocked.reduce_blockwise(xp, per_sample, operands, reduction)


@numpy_scalar_results
@kernels(
    Kernel("multilabel_margin_loss", "torch", "first", "torch:multilabel_margin_loss",
           "F.multilabel_margin_loss", "CPU; float32/64; int64 targets; not empty"),
    Kernel("multilabel_margin_loss", "numpy", "first",
           "numpy.class_losses:multilabel_margin_loss", "one numba loop",
           "C-contiguous float32/64 (N, C); int64 targets in range", needs="numba"),
)
def multilabel_margin_loss(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Multi-label hinge loss between the listed classes and all the others.

    Shapes: ``input`` (N, C) or (C) (or 0-d, one class); ``target`` of the same
    shape and an integer dtype. Each row of ``target`` lists class indices and
    ends at its first -1; what follows is ignored. The unreduced loss has shape
    (N), or is 0-d for a 1-d input (whatever the reduction).

    With :math:`J_n` the list of row :math:`n` (as a list: a class listed twice
    counts twice) and :math:`T_n` the set of classes in it,

    .. math::

        \ell_n = \frac{1}{C} \sum_{j \in J_n} \sum_{i \notin T_n}
                 \max(0, 1 - (x_{nj} - x_{ni}))

    Only strictly positive hinge terms count (so the gradient at a hinge of
    exactly 0 is 0). The pairs are formed as an (N, C, C) temporary.

    Raises
    ------
    TypeError
        A target that is not of an integer dtype.
    ValueError
        An input that is not a non-empty vector or matrix, a target of another
        shape, or (on eager arrays) a target value below -1 or at least C.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.asarray([[0.1, 0.2, 0.4, 0.8]])
    >>> y = np.asarray([[3, 0, -1, 1]])
    >>> round(float(multilabel_margin_loss(x, y)), 6)
    0.85
    """
    func = "multilabel_margin_loss"
    xp = namespace(func, {"input": input, "target": target})
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", func, xp, input, target, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    float_dtype(func, xp, input)
    _check_vector_or_matrix(input)
    n_classes = 1 if input.ndim == 0 else input.shape[-1]
    if input.ndim <= 1:
        consistent = target.ndim <= 1 and _array.size(target) == n_classes
    else:
        consistent = target.ndim == 2 and tuple(target.shape) == tuple(input.shape)
    if not consistent:
        raise ValueError(
            f"inconsistent target size: {shape_text(target.shape)} "
            f"for input of size: {shape_text(input.shape)}"
        )
    _require_class_indices(func, xp, target)
    if target.dtype != xp.int64:
        target = xp.astype(target, xp.int64)  # torch gathers with int64 only; and -1 must fit
    if _outside(xp, target, -1, n_classes - 1):
        raise ValueError("argument #2 'target' is out of range")

    x = xp.reshape(input, (-1, n_classes))
    t = xp.reshape(target, (-1, n_classes))
    positions = _class_positions(xp, n_classes, t)
    # A row's list runs up to (not including) its first negative entry.
    lengths = xp.min(xp.where(t < 0, positions, n_classes), axis=1, keepdims=True)
    width = n_classes
    if _array.is_eager(t) and t.shape[0] > 0:
        # Only the first `width` columns hold listed classes: the pairs need no more.
        width = int(xp.max(lengths))
        t = t[:, :width]

    def per_sample(x, t, lengths):
        listed = positions[:width] < lengths
        safe_t = xp.where(listed, t, 0)
        x_listed = _ops.take_along_axis(xp, x, safe_t, axis=1)
        # Unlisted entries become C, a class that no position equals.
        is_target = xp.any(xp.where(listed, t, n_classes)[:, :, None] == positions, axis=1)
        # z[n, j, i] = 1 - x[n, j-th listed] + x[n, i], the hinge between the two. The
        # pairs that do not count get z = -inf (an unlisted j, or an i in the list), through
        # a where on each side, so that the (N, width, C) array takes three passes.
        first = 1.0 - xp.where(listed, x_listed, math.inf)
        second = xp.where(is_target, -math.inf, x)
        z = first[:, :, None] + second[:, None, :]
        return _reduction.sum_along(xp, _ops.positive_part(xp, z), (1, 2)) / n_classes

    if input.ndim <= 1:
        return xp.reshape(per_sample(x, t, lengths), ())
    return _blocked.reduce_blockwise(xp, per_sample, (x, t, lengths), reduction,
                                 row_elements=max(width, 1) * n_classes)


def _outside(xp, target: Any, low: int, high: int) -> bool:
    """Whether an eager integer ``target`` has an element outside ``[low, high]``
    (from its minimum and maximum); lazy and empty targets are not looked at."""
    if not _array.is_eager(target) or any(n == 0 for n in target.shape):
        return False
    smallest, largest = extrema(xp, target)
    return smallest < low or largest > high


@numpy_scalar_results
@kernels(
    Kernel("multi_margin_loss", "torch", "first", "torch:multi_margin_loss",
           "F.multi_margin_loss", "CPU; float32/64; int64 targets; weight of the input's dtype; "
           "not empty"),
    Kernel("multi_margin_loss", "numpy", "first", "numpy.class_losses:multi_margin_loss",
           "numba, rows in parallel", "C-contiguous float32/64 (N, C); int64 targets in range; "
           "p in (1, 2)", needs="numba"),
)
def multi_margin_loss(
    input: Array,
    target: Array,
    p: int = 1,
    margin: float = 1.0,
    weight: Array | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Multi-class hinge loss between the target class and every other class.

    Shapes: ``input`` (N, C) or (C) (or 0-d, one class); ``target`` (N) of
    class indices, or 0-d or (1) for a 1-d input; ``weight`` (C). The unreduced
    loss has ``target``'s shape.

    .. math::

        \ell_n = \frac{w_{y_n}}{C} \sum_{i \ne y_n}
                 \max(0, \mathrm{margin} - x_{n y_n} + x_{ni})^p,
        \qquad p \in \{1, 2\}

    Only strictly positive hinge terms count (so the gradient at a hinge of
    exactly 0 is 0, as in torch's kernel).

    Raises
    ------
    TypeError
        A target that is not of an integer dtype.
    ValueError
        ``p`` not 1 or 2, a weight that is not 1-d or not of size C, an input
        that is not a non-empty vector or matrix, a target of the wrong size, or
        (on eager arrays) a class index outside [0, C).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.asarray([[0.1, 0.2, 0.4, 0.8]])
    >>> round(float(multi_margin_loss(x, np.asarray([3]))), 6)
    0.325
    """
    func = "multi_margin_loss"
    xp = namespace(func, {"input": input, "target": target, "weight": weight}, optional=("weight",))
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", func, xp, input, target, p=p, margin=margin,
                          weight=weight, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    if p != 1 and p != 2:
        raise ValueError("only p == 1 and p == 2 supported")
    if weight is not None and weight.ndim != 1:
        raise ValueError("weight must be one-dimensional")
    floats = (input,) if weight is None else (input, weight)
    dtype = float_dtype(func, xp, *floats)
    _check_vector_or_matrix(input)
    n_samples = input.shape[0] if input.ndim == 2 else 1
    n_classes = 1 if input.ndim == 0 else input.shape[-1]
    if target.ndim > 1 or _array.size(target) != n_samples:
        raise ValueError(
            "multi_margin_loss: target tensor should be 1-D with size equal to the number "
            f"of input samples (batch size). Expected target size [{n_samples}], but got "
            f"{shape_text(target.shape)}. Input has shape {shape_text(input.shape)}."
        )
    if weight is not None and weight.shape[0] != n_classes:
        raise ValueError(
            f"inconsistent weight size, expected {n_classes} but got {shape_text(weight.shape)}"
        )
    _require_class_indices(func, xp, target)
    if target.dtype != xp.int64:
        target = xp.astype(target, xp.int64)  # torch gathers with int64 only
    if _outside(xp, target, 0, n_classes - 1):
        raise ValueError("target out of range")

    x = xp.reshape(input, (n_samples, n_classes))
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    t = xp.reshape(target, (n_samples, 1))
    positions = _class_positions(xp, n_classes, t)
    if weight is not None and weight.dtype != dtype:
        weight = xp.astype(weight, dtype)

    def per_sample(x, t):
        x_target = _ops.take_along_axis(xp, x, t, axis=1)
        z = (margin - x_target) + x
        # Only strictly positive hinges count, and never the target's own class.
        hinge = xp.where((z > 0) & (t != positions), z, 0.0)
        if p == 2:
            hinge = hinge * hinge
        loss = _reduction.sum_along(xp, hinge, 1) / n_classes
        if weight is not None:
            loss = loss * xp.take(weight, xp.reshape(t, (-1,)), axis=0)
        return loss

    if reduction == "none":
        return xp.reshape(per_sample(x, t), target.shape)
    return _blocked.reduce_blockwise(xp, per_sample, (x, t), reduction)
