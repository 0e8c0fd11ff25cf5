r"""Losses on embeddings, and the distance they use.

``pairwise_distance`` (the p-norm of a difference along the last dimension),
``cosine_embedding_loss`` (similar or dissimilar pairs, by cosine),
``triplet_margin_loss`` and ``triplet_margin_with_distance_loss`` (an anchor
should be nearer its positive than its negative, by a margin).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

from anyloss import _blocked, _ops, _reduction, _registry
from anyloss._array import (
    Array,
    float_dtype,
    isdtype,
    namespace,
    needs_float32_accumulation,
    numpy_scalar_results,
)
from anyloss._operands import elementwise_operands
from anyloss._registry import Kernel, kernels
from anyloss._validate import broadcast_shape, shape_text

__all__ = [
    "pairwise_distance",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]

#: Added to each squared norm by ``cosine_embedding_loss``, so that zero vectors give cos = 0.
#: torch's kernel holds 1e-12 as a single-precision constant; its float64 value
#: is 1e-12 rounded to float32, which float64 results (and gradients at a zero
#: vector, which scale as 1/sqrt(epsilon)) reflect.
COSINE_EPSILON = struct.unpack("f", struct.pack("f", 1e-12))[0]


def _clamp_min_zero(xp: ModuleType, z: Any) -> Any:
    """``max(z, 0)`` with torch's ``clamp_min`` conventions.

    nan stays nan, and at exactly 0 the gradient passes through (derivative 1).
    """
    return _ops.clamp_min(xp, z, 0.0)


def _root(xp: ModuleType, s: Any, p: float) -> Any:
    """``s ** (1 / p)`` for ``s >= 0``, whose gradient at ``s == 0`` is 0 instead of inf."""
    if p < 0:
        return s ** (1.0 / p)
    zero = s == 0
    safe = xp.where(zero, 1.0, s)
    return xp.where(zero, 0.0, safe ** (1.0 / p))


def _vector_norm(xp: ModuleType, d: Any, p: float, axis: int, keepdims: bool) -> Any:
    """The p-norm of ``d`` along ``axis``, for any real ``p`` (0 counts the non-zeros).

    Written with sums of powers (``linalg.vector_norm`` is an optional
    extension). Where a component or the whole norm is 0, the powers are taken
    of a safe stand-in (double ``where``), so that gradients stay finite: torch
    gives 0 there. float16 and bfloat16 are computed in float32.
    """
    if needs_float32_accumulation(d.dtype):
        return xp.astype(_vector_norm(xp, xp.astype(d, xp.float32), p, axis, keepdims), d.dtype)
    if p == 2:
        # The gradient of d * d is 0 at d == 0 already: no magnitude needed.
        squares = _ops.sum_of_products(xp, d, d, axis)
        if keepdims:
            squares = xp.expand_dims(squares, axis=axis)
        return _ops.sqrt_zero_gradient(xp, squares)
    zero = d == 0
    magnitude = _ops.absolute(xp, d)  # derivative 0 at d == 0 (JAX's abs has 1 there)
    if p == 0:
        # 1 per non-zero component; the zeros keep the result connected to ``d``
        # for autodiff, with a zero gradient as torch gives.
        return xp.sum(xp.where(magnitude != 0, 1.0, magnitude), axis=axis, keepdims=keepdims)
    if p in (math.inf, -math.inf):  # not math.isinf: torch.compile cannot trace it
        if d.shape[axis] == 0:
            raise ValueError(
                f"linalg.vector_norm cannot compute the {p} norm on the dimension {axis}"
                "because this dimension is empty and the operation does not have an identity"
            )
        reduce = xp.max if p > 0 else xp.min
        return reduce(magnitude, axis=axis, keepdims=keepdims)
    if p == 1:
        return xp.sum(magnitude, axis=axis, keepdims=keepdims)
    safe = xp.where(zero, 1.0, magnitude)
    powers = xp.where(zero, 0.0 if p > 0 else math.inf, safe**p)
    return _root(xp, xp.sum(powers, axis=axis, keepdims=keepdims), p)


@numpy_scalar_results
def pairwise_distance(
    x1: Array, x2: Array, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False
) -> Array:
    r"""The p-norm distance between the rows of ``x1`` and ``x2``, along the last dimension.

    .. math::

        d = \Bigl(\sum_i |x_{1,i} - x_{2,i} + \varepsilon|^p\Bigr)^{1/p}

    ``eps`` is added to the difference (not to the norm), keeping the norm away
    from 0 where the vectors are equal. ``p`` may be any real: 0 counts the
    non-zero components, ``inf`` and ``-inf`` take the largest and smallest
    magnitude.

    Shapes: ``x1`` and ``x2`` broadcast, e.g. (N, D) and (D); the result drops
    the last dimension of the broadcast shape, or keeps it as size 1 with
    ``keepdim``. For 0-d arrays the result is 0-d.

    Examples
    --------
    >>> import numpy as np
    >>> float(pairwise_distance(np.asarray([3.0, 0.0]), np.asarray([0.0, 4.0]), eps=0.0))
    5.0
    """
    xp, (x1, x2) = elementwise_operands("pairwise_distance", {"x1": x1, "x2": x2})
    return _distance(xp, x1, x2, p, eps, keepdim)


def _distance(xp: ModuleType, x1: Any, x2: Any, p: float, eps: float, keepdim: bool = False):
    """:func:`pairwise_distance` of operands already checked and of one dtype."""
    diff = x1 - x2 + eps
    if diff.ndim == 0:
        return _vector_norm(xp, xp.reshape(diff, (1,)), p, axis=0, keepdims=False)
    return _vector_norm(xp, diff, p, axis=diff.ndim - 1, keepdims=keepdim)


@numpy_scalar_results
@kernels(
    Kernel("cosine_embedding_loss", "numpy", "first", "numpy.elementwise:cosine_embedding_loss",
           "one numba pass",
           "C-contiguous float32/64 (N, D) pairs; (N,) target of their dtype or int64",
           needs="numba"),
)
def cosine_embedding_loss(
    input1: Array,
    input2: Array,
    target: Array,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Cosine loss for pairs that should be similar (target 1) or dissimilar (target -1).

    Shapes: ``input1`` and ``input2`` (N, D) with ``target`` (N), or (D) with a
    0-d ``target``. The unreduced loss has the target's shape.

    .. math::

        \cos_n = \frac{x_{1n} \cdot x_{2n}}
                      {\sqrt{(\lVert x_{1n} \rVert^2 + 10^{-12})
                             (\lVert x_{2n} \rVert^2 + 10^{-12})}},
        \qquad
        \ell_n = \begin{cases}
            1 - \cos_n & y_n = 1 \\
            \max(0, \cos_n - \mathrm{margin}) & y_n = -1 \\
            0 & \text{otherwise}
        \end{cases}

    The :math:`10^{-12}` makes a zero vector's cosine 0 (and its gradient
    finite). The result has the inputs' floating dtype; the target's dtype does
    not matter. float16 and bfloat16 inputs are summed in float32, where the
    :math:`10^{-12}` does not vanish (torch's float16 kernel gives nan for a
    zero vector).

    Raises
    ------
    ValueError
        A target that is not 0-d or 1-d, or inputs whose number of dimensions
        does not suit the target.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.asarray([[1.0, 0.0], [1.0, 0.0]])
    >>> cosine_embedding_loss(x, np.asarray([[0.0, 1.0], [1.0, 1.0]]),
    ...                       np.asarray([1, -1]), reduction="none").round(6)
    array([1.      , 0.707107])
    """
    func = "cosine_embedding_loss"
    xp = namespace(func, {"input1": input1, "input2": input2, "target": target})
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", func, xp, input1, input2, target, margin=margin,
                          reduction=reduction)
    if loss is not NotImplemented:
        return loss
    if target.ndim > 1:
        raise ValueError("0D or 1D target tensor expected, multi-target not supported")
    expected_ndim = target.ndim + 1
    if not input1.ndim == input2.ndim == expected_ndim:
        raise ValueError(
            f"{target.ndim}D target tensor expects {expected_ndim}D input tensors, but found "
            f"inputs with sizes {shape_text(input1.shape)} and {shape_text(input2.shape)}."
        )
    dtype = float_dtype(func, xp, input1, input2)
    if input1.dtype != dtype:
        input1 = xp.astype(input1, dtype)
    if input2.dtype != dtype:
        input2 = xp.astype(input2, dtype)
    pair_shape = broadcast_shape(input1.shape, input2.shape)
    if pair_shape[:-1] != target.shape:
        broadcast_shape(pair_shape[:-1], target.shape)

    if needs_float32_accumulation(dtype):
        # In 16 bits the epsilon would underflow to 0, and a zero vector give nan.
        input1, input2 = xp.astype(input1, xp.float32), xp.astype(input2, xp.float32)
    axis = target.ndim
    # max(0, cos - 0) is max(0, cos): the default margin saves an operation.
    no_margin = isinstance(margin, (int, float)) and margin == 0

    def per_pair(x1, x2, y):
        dot = _ops.sum_of_products(xp, x1, x2, axis)
        squared1 = _ops.sum_of_products(xp, x1, x1, axis) + COSINE_EPSILON
        squared2 = _ops.sum_of_products(xp, x2, x2, axis) + COSINE_EPSILON
        cos = dot / xp.sqrt(squared1 * squared2)
        if cos.dtype != dtype:
            cos = xp.astype(cos, dtype)
        dissimilar = _clamp_min_zero(xp, cos if no_margin else cos - margin)
        # One where inside the other: no target is both 1 and -1.
        return xp.where(y == 1, 1.0 - cos, xp.where(y == -1, dissimilar, 0.0))

    if target.ndim == 0:
        return _reduction.reduce(xp, per_pair(input1, input2, target), reduction)
    n = target.shape[0]
    split = (input1.shape[0] == n, input2.shape[0] == n, True)
    return _blocked.reduce_blockwise(xp, per_pair, (input1, input2, target), reduction,
                                 split=split)


def _check_triplet(margin: float, anchor: Any, positive: Any, negative: Any) -> None:
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise ValueError(
            "The anchor, positive, and negative tensors are expected to have the same "
            f"number of dimensions, but got: anchor {anchor.ndim}D, positive "
            f"{positive.ndim}D, and negative {negative.ndim}D inputs"
        )


def _triplet_hinge(xp, distance, anchor, positive, negative, margin, swap):
    """``max(0, margin + d(a, p) - d(a, n))``; ``swap`` takes ``min(d(a, n), d(p, n))``."""
    to_positive = distance(anchor, positive)
    to_negative = distance(anchor, negative)
    if swap:
        to_negative = xp.minimum(to_negative, distance(positive, negative))
    return _clamp_min_zero(xp, margin + to_positive - to_negative)


@numpy_scalar_results
@kernels(
    Kernel("triplet_margin_loss", "numpy", "checked", "numpy.float16:triplet_margin_loss",
           "the formula in float32 (float16 converted by compiled loops, or NumPy's casts "
           "without numba)", "float16 NumPy arrays"),
)
def triplet_margin_loss(
    anchor: Array,
    positive: Array,
    negative: Array,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Triplet loss: the anchor should be nearer the positive than the negative, by ``margin``.

    .. math::

        \ell_n = \max\bigl(0, \mathrm{margin} + d(a_n, p_n) - d(a_n, n_n)\bigr)

    with :math:`d` = :func:`pairwise_distance` (``p``, ``eps``). With ``swap``,
    :math:`d(a_n, n_n)` becomes :math:`\min(d(a_n, n_n), d(p_n, n_n))` (Balntas
    et al., 2016, "Learning local feature descriptors with triplets and shallow
    convolutional neural networks").

    Shapes: the three arrays have the same number of dimensions, (N, D) or (D),
    and broadcast pairwise; the unreduced loss drops the last dimension.

    Raises
    ------
    ValueError
        ``margin <= 0``, or arrays with different numbers of dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> a, p, n = np.asarray([0.0, 0.0]), np.asarray([1.0, 0.0]), np.asarray([3.0, 0.0])
    >>> float(triplet_margin_loss(a, p, n, margin=3.0, eps=0.0))
    1.0
    """
    func = "triplet_margin_loss"
    arrays = {"anchor": anchor, "positive": positive, "negative": negative}
    xp = namespace(func, arrays)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    _check_triplet(margin, anchor, positive, negative)
    dtype = float_dtype(func, xp, anchor, positive, negative)
    broadcast_shape(anchor.shape, positive.shape, negative.shape)
    loss = _registry.call("checked", func, xp, anchor, positive, negative, margin=margin, p=p,
                          eps=eps, swap=swap, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    if not anchor.dtype == positive.dtype == negative.dtype == dtype:
        anchor, positive, negative = (
            x if x.dtype == dtype else xp.astype(x, dtype) for x in (anchor, positive, negative)
        )

    def distance(x1, x2):
        return _distance(xp, x1, x2, p, eps)

    return _triplet_loss(xp, distance, anchor, positive, negative, margin, swap, reduction)


def _triplet_loss(xp, distance, anchor, positive, negative, margin, swap, reduction):
    """The reduced :func:`_triplet_hinge` of a ``distance`` that works row by row."""

    def per_triplet(a, pos, neg):
        return _triplet_hinge(xp, distance, a, pos, neg, margin, swap)

    if anchor.ndim < 2:  # one triplet (or 0-d): no rows to evaluate in blocks
        return _reduction.reduce(xp, per_triplet(anchor, positive, negative), reduction)
    return _blocked.reduce_blockwise(xp, per_triplet, (anchor, positive, negative), reduction)


@numpy_scalar_results
def triplet_margin_with_distance_loss(
    anchor: Array,
    positive: Array,
    negative: Array,
    *,
    distance_function: Callable[[Array, Array], Array] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Array:
    r"""Triplet loss with any distance: :math:`\max(0, \mathrm{margin} + d(a, p) - d(a, n))`.

    ``distance_function(x1, x2)`` takes two arrays and returns their distances
    (one per pair; it need not be a metric). The default is
    :func:`pairwise_distance` with its defaults (Euclidean, ``eps=1e-6``).
    ``swap`` replaces :math:`d(a, n)` by :math:`\min(d(a, n), d(p, n))`.
    The arrays are passed to the distance as given.

    Raises
    ------
    ValueError
        An unknown reduction, ``margin <= 0``, or arrays with different numbers
        of dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> a, p, n = np.asarray([[0.0, 0.0]]), np.asarray([[1.0, 0.0]]), np.asarray([[3.0, 0.0]])
    >>> l1 = lambda x, y: np.abs(x - y).sum(axis=-1)
    >>> triplet_margin_with_distance_loss(a, p, n, distance_function=l1, margin=3.0,
    ...                                   reduction="none")
    array([1.])
    """
    xp = namespace(
        "triplet_margin_with_distance_loss",
        {"anchor": anchor, "positive": positive, "negative": negative},
    )
    if reduction not in _reduction.STANDARD:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    _check_triplet(margin, anchor, positive, negative)
    if distance_function is not None:
        # A user's distance is called on the whole arrays, as given.
        loss = _triplet_hinge(xp, distance_function, anchor, positive, negative, margin, swap)
        return _reduction.reduce(xp, loss, reduction)

    return _triplet_loss(xp, _default_distance(xp, anchor, positive, negative, swap),
                         anchor, positive, negative, margin, swap, reduction)


def _default_distance(xp, anchor, positive, negative, swap):
    """:func:`pairwise_distance` with its defaults, as the triplet loss calls it.

    Where the arrays share a floating dtype, its checks of each pair (the
    shapes broadcast) are made here once and its formula is called directly:
    it would cast nothing.
    """
    dtype = anchor.dtype
    if not (positive.dtype == negative.dtype == dtype and isdtype(xp, dtype, "real floating")):
        return pairwise_distance
    if not anchor.shape == positive.shape == negative.shape:
        broadcast_shape(anchor.shape, positive.shape)
        broadcast_shape(anchor.shape, negative.shape)
        if swap:
            broadcast_shape(positive.shape, negative.shape)

    def distance(x1, x2):
        return _distance(xp, x1, x2, 2.0, 1e-6)

    return distance
