"""Reductions of an elementwise loss: ``'none'``, ``'mean'``, ``'sum'`` (and ``'batchmean'``).

torch's functional losses take ``reduction`` plus the deprecated ``size_average``
and ``reduce`` booleans, which override it when either is given.
:func:`resolve` turns the three into one validated string exactly as
``torch.nn._reduction`` does; :func:`reduce` applies it.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from anyloss._array import needs_float32_accumulation
from anyloss._registry import Kernel, call, declare
from anyloss._validate import warn

__all__ = ["resolve", "legacy_reduction", "reduce", "sum_along", "total", "mean", "divide_or_nan"]

STANDARD = ("none", "mean", "sum")

declare(
    Kernel("sum_along", "numpy", "block", "numpy.blocks:sum_along",
           "np.add.reduce without np.sum's wrapper", "floating ndarrays"),
    Kernel("mean", "torch", "block", "torch:mean", "torch.mean"),
    Kernel("mean", "numpy", "block", "numpy.blocks:mean",
           "np.add.reduce, one division"),
)


def legacy_reduction(size_average: bool | None, reduce: bool | None, stacklevel: int = 4) -> str:
    """Map the deprecated ``size_average``/``reduce`` pair to a reduction, with a warning.

    An argument left as ``None`` counts as ``True``: both true is ``'mean'``,
    ``reduce`` alone true is ``'sum'``, and ``reduce=False`` is ``'none'``
    whatever ``size_average`` says. ``stacklevel`` points the warning at the
    user's call (the default suits a loss function calling :func:`resolve`).
    """
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        result = "mean"
    elif reduce:
        result = "sum"
    else:
        result = "none"
    warn("size_average and reduce args will be deprecated, please use reduction='%s' instead.",
         result, stacklevel=stacklevel)
    return result


def resolve(
    reduction: str,
    size_average: bool | None = None,
    reduce: bool | None = None,
    allowed: tuple[str, ...] = STANDARD,
) -> str:
    """The reduction a loss applies, after the legacy arguments and validation.

    ``'elementwise_mean'``, torch's old spelling of ``'mean'``, is accepted with
    a deprecation warning.

    Raises
    ------
    ValueError
        ``"<reduction> is not a valid value for reduction"`` for anything not in
        ``allowed``.
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    if reduction == "elementwise_mean":
        warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            stacklevel=3,
        )
        reduction = "mean"
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def sum_along(xp: ModuleType, x: Any, axis: int | tuple[int, ...] | None = None) -> Any:
    """Sum of ``x`` along ``axis`` (all axes by default), in ``x``'s dtype.

    16-bit floats are accumulated in float32 and rounded once at the end.
    """
    if needs_float32_accumulation(x.dtype):
        return xp.astype(xp.sum(xp.astype(x, xp.float32), axis=axis), x.dtype)
    out = call("block", "sum_along", xp, x, axis)
    return xp.sum(x, axis=axis) if out is NotImplemented else out


def total(xp: ModuleType, x: Any) -> Any:
    """Sum of all elements of ``x`` as a 0-d array of ``x``'s dtype (see :func:`sum_along`)."""
    return sum_along(xp, x)


def mean(xp: ModuleType, x: Any) -> Any:
    """Mean of all elements of ``x``, ``nan`` for an empty ``x`` (and no warning).

    16-bit floats are accumulated in float32 and rounded once at the end.
    """
    if any(n == 0 for n in x.shape):
        # Keep the result connected to x, so that autograd still sees it.
        return xp.sum(x) * float("nan")
    if needs_float32_accumulation(x.dtype):
        return xp.astype(xp.mean(xp.astype(x, xp.float32)), x.dtype)
    out = call("block", "mean", xp, x)
    return xp.mean(x) if out is NotImplemented else out


def reduce(xp: ModuleType, loss: Any, reduction: str) -> Any:
    """Apply a resolved ``reduction`` (``'none'``, ``'mean'`` or ``'sum'``) to ``loss``."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return total(xp, loss)
    if reduction == "mean":
        return mean(xp, loss)
    raise ValueError(f"{reduction} is not a valid value for reduction")


def divide_or_nan(xp: ModuleType, total: Any, denominator: Any) -> Any:
    """``total / denominator`` for 0-d arrays, nan where ``denominator`` is 0.

    The weighted mean of the class losses (nothing counted gives 0/0 = nan, as in
    torch). A double ``where`` keeps the gradient of that case 0 instead of nan.
    """
    empty = denominator == 0
    return xp.where(empty, math.nan, total / xp.where(empty, 1.0, denominator))
