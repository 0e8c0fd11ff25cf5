r"""The shared core of the class-index losses: target masks and the negative log-likelihood.

Written against the array API and imported openly by :mod:`anyloss.classification`
and by the backends (:mod:`anyloss.backends.jax` compiles :func:`class_index_loss`,
:mod:`anyloss.backends.numpy.cross_entropy` reads its targets through
:func:`masks`), so that each piece exists once.

Class indices live along the *class axis* of the input: axis 0 of an unbatched
``(C,)`` input, axis 1 of ``(N, C)`` and ``(N, C, d1, ..., dK)``.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from anyloss import _ops, _reduction
from anyloss._array import indexing_dtype

__all__ = ["class_axis", "along_class_axis", "masks", "class_index_loss"]


def class_axis(input: Any) -> int:
    """The class axis of ``input``: 0 for a ``(C,)`` input, else 1."""
    return 0 if input.ndim == 1 else 1


def along_class_axis(xp: ModuleType, weight: Any, like: Any) -> Any:
    """A ``(C,)`` weight reshaped to broadcast along the class axis of ``like``."""
    if like.ndim == 1:
        return weight
    return xp.reshape(weight, (1, weight.shape[0]) + (1,) * (like.ndim - 2))


def masks(xp: ModuleType, target: Any, n_classes: int, ignore_index: int) -> tuple[Any, Any]:
    """``(ignored, in_range)`` of an integer ``target``: where it equals ``ignore_index``,
    and where it is a class in ``[0, C)``.

    A value outside the target dtype's range never matches (``ignore_index=-100``
    on a ``uint8`` target ignores nothing), without overflowing the comparison.

    >>> import array_api_strict as xp
    >>> ignored, in_range = masks(xp, xp.asarray([0, -100, 3]), 3, -100)
    >>> ignored
    Array([False,  True, False], dtype=array_api_strict.bool)
    >>> in_range
    Array([ True, False, False], dtype=array_api_strict.bool)
    """
    info = xp.iinfo(target.dtype)
    nowhere = xp.zeros_like(target, dtype=xp.bool)
    ignored = target == ignore_index if info.min <= ignore_index <= info.max else nowhere
    too_high = target >= n_classes if n_classes <= info.max else nowhere
    return ignored, (target >= 0) & xp.logical_not(too_high)


def class_index_loss(
    xp: ModuleType,
    log_probs: Any,
    target: Any,
    weight: Any | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    plain: bool,
) -> Any:
    r"""Reduced (label-smoothed) negative log-likelihood of class-index targets.

    .. math::

        \ell_n = (1 - \varepsilon)\, w_{y_n} (-p_{n, y_n})
                 + \frac{\varepsilon}{C} \sum_c w_c (-p_{n, c}), \qquad
        \text{mean} = \frac{\sum_n \ell_n}{\sum_n w_{y_n}}

    Parameters
    ----------
    log_probs
        Log-probabilities :math:`p`, ``(C,)`` or ``(N, C, ...)``.
    target
        Integer class indices, the input's shape without the class axis; shapes
        (and, on eager arrays, values) already checked.
    weight
        ``(C,)`` class weights :math:`w` or ``None`` (all 1).
    plain
        The targets are vouched for: all in ``[0, C)`` and none ignored, so the
        masks are left out. Otherwise ignored targets give 0 and are left out of
        the mean's denominator, and an index outside ``[0, C)`` that is not
        ``ignore_index`` gives a nan element (possible on lazy arrays only).

    When nothing counts (every target ignored, or all their weights 0),
    ``'mean'`` is nan, through a double ``where`` so that the gradient stays 0.
    """
    axis = class_axis(log_probs)
    n_classes = log_probs.shape[axis]
    index_dtype = indexing_dtype(xp)
    if plain:
        ignored = in_range = usable = None
        safe_target = target
    else:
        ignored, in_range = masks(xp, target, n_classes, ignore_index)
        # Every gather reads a valid class: ignored and invalid positions read class 0
        # and are replaced afterwards (double where keeps their gradients at zero).
        usable = in_range & xp.logical_not(ignored)
        safe_target = xp.where(usable, target, xp.zeros_like(target))
    if safe_target.dtype != index_dtype:
        safe_target = xp.astype(safe_target, index_dtype)
    picked = _ops.take_along_axis(xp, log_probs, xp.expand_dims(safe_target, axis=axis),
                                  axis=axis)
    loss = -xp.squeeze(picked, axis=axis)
    target_weight = None
    if weight is not None:
        weight = xp.reshape(weight, (n_classes,))
        flat = xp.take(weight, xp.reshape(safe_target, (-1,)), axis=0)
        target_weight = xp.reshape(flat, target.shape)
        loss = loss * target_weight
    if label_smoothing > 0:
        if weight is not None:
            log_probs = log_probs * along_class_axis(xp, weight, log_probs)
        smooth = -xp.sum(log_probs, axis=axis)
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / n_classes) * smooth
    if not plain:
        loss = xp.where(ignored, 0.0, xp.where(in_range, loss, math.nan))
    if reduction == "none":
        return loss
    total_loss = _reduction.total(xp, loss)
    if reduction == "sum":
        return total_loss
    if plain and weight is None:
        return total_loss / math.prod(target.shape)
    if target_weight is None:
        target_weight = xp.ones_like(loss)
    if not plain:
        target_weight = xp.where(usable, target_weight, 0.0)
    return _reduction.divide_or_nan(xp, total_loss, _reduction.total(xp, target_weight))
