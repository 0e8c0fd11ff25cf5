"""Numerically stable building blocks, written against the array API.

Each function takes the namespace ``xp`` first and works elementwise with
broadcasting. The formulas are chosen so that neither the value nor the
gradient (through torch autograd or ``jax.grad``) produces an inf or nan that
the mathematical function does not have.

Where a library has its own kernel for a block (``torch.nn.functional.logsigmoid``,
``torch.special.xlogy``, ``torch.logsumexp``, ``jax.nn.log_sigmoid``, NumPy's
``vecdot``...), the block calls it: the backend module of that library
(:mod:`anyloss.backends`) lists its kernels in a ``BUILDING_BLOCKS`` table, looked
up once per namespace by :func:`native`. A kernel may return ``NotImplemented``
to decline a call (e.g. one that autograd must see through); the portable formula
written here then runs. Kernels follow the gradient conventions of torch's own
losses, so that gradients through anyloss stay equal to torch's.

:func:`reduce_blockwise` evaluates an elementwise loss and its reduction in
cache-sized blocks of rows where the library is eager and nothing needs the
unreduced loss: the temporaries of a formula then never leave the CPU cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from anyloss import _reduction
from anyloss._array import (
    call_native,
    indexing_dtype,
    native,
    needs_float32_accumulation,
    stop_gradient,
)

__all__ = [
    "native",
    "softplus",
    "log_sigmoid",
    "xlogy",
    "relu",
    "positive_part",
    "clip",
    "clamp_min",
    "clamp_min_identity_gradient",
    "sqrt_zero_gradient",
    "clamped_log",
    "clamped_log1p",
    "sum_of_products",
    "logsumexp",
    "log_softmax",
    "take_along_axis",
    "reduce_blockwise",
]



def softplus(xp: ModuleType, x: Any) -> Any:
    """``log(1 + exp(x))``, finite for every finite ``x``.

    Computed as ``logaddexp(0, x)``, which never overflows: for ``x = 1000``
    it gives 1000, where the naive formula gives inf.

    >>> softplus(xp, xp.asarray([-1000.0, 0.0, 1000.0]))   # doctest: +SKIP
    array([0., 0.69314718, 1000.])
    """
    out = call_native(xp, "softplus", x)
    if out is not NotImplemented:
        return out
    return xp.logaddexp(0.0, x)


def log_sigmoid(xp: ModuleType, x: Any) -> Any:
    """``log(1 / (1 + exp(-x)))``, finite for every finite ``x``: ``-softplus(-x)``."""
    out = call_native(xp, "log_sigmoid", x)
    if out is not NotImplemented:
        return out
    return -softplus(xp, -x)


def xlogy(xp: ModuleType, x: Any, y: Any) -> Any:
    """``x * log(y)``, defined as 0 wherever ``x == 0`` (even where ``y == 0``).

    Uses the double-``where`` pattern: the logarithm only ever sees ``y`` where
    ``x != 0``, so ``log(0)`` cannot put a nan into the gradient of the
    masked-out elements. (torch's native ``xlogy``, used for torch arrays, gives
    ``nan`` for ``xlogy(0, nan)`` and for the gradient with respect to ``y`` at
    ``x = y = 0``, as torch's own ``kl_div`` does.)

    >>> xlogy(xp, xp.asarray([0.0, 2.0]), xp.asarray([0.0, 3.0]))   # doctest: +SKIP
    array([0., 2.19722458])
    """
    out = call_native(xp, "xlogy", x, y)
    if out is not NotImplemented:
        return out
    zero = x == 0
    safe_y = xp.where(zero, 1.0, y)
    return xp.where(zero, 0.0, x * xp.log(safe_y))


def relu(xp: ModuleType, x: Any) -> Any:
    """``max(x, 0)`` elementwise, the hinge of the margin losses.

    torch's kernel is ``clamp_min``, whose gradient at exactly 0 is 1, as in
    torch's own margin losses.
    """
    out = call_native(xp, "relu", x)
    if out is not NotImplemented:
        return out
    return xp.maximum(x, 0.0)


def positive_part(xp: ModuleType, x: Any) -> Any:
    """``max(x, 0)`` elementwise, with gradient 0 at exactly 0 (and 1 above).

    The hinge of kernels that add only strictly positive terms (torch's
    ``multilabel_margin_loss``): one pass where the library has ``relu``, instead
    of a comparison and a ``where``.
    """
    out = call_native(xp, "positive_part", x)
    if out is not NotImplemented:
        return out
    return xp.where(x > 0, x, 0.0)


def clip(xp: ModuleType, x: Any, lower: float, upper: float) -> Any:
    """``min(max(x, lower), upper)`` for Python numbers ``lower <= upper``."""
    out = call_native(xp, "clip", x, lower, upper)
    if out is not NotImplemented:
        return out
    if hasattr(xp, "clip"):
        return xp.clip(x, lower, upper)
    return xp.minimum(xp.maximum(x, lower), upper)


def clamp_min_identity_gradient(xp: ModuleType, x: Any, lower: float) -> Any:
    """``max(x, lower)`` in value, while the gradient is that of ``x`` itself.

    This is torch's "clamp under ``no_grad``" idiom (used by
    ``gaussian_nll_loss`` for its ``eps``) in a form that works for every
    library: below ``lower`` the value is ``(x - stop_gradient(x)) + lower``,
    which equals ``lower`` exactly and has derivative 1 with respect to ``x``.
    """
    out = call_native(xp, "clamp_min_identity_gradient", x, lower)
    if out is not NotImplemented:
        return out
    return xp.where(x < lower, (x - stop_gradient(x)) + lower, x)


def clamped_log(xp: ModuleType, x: Any, floor: float) -> Any:
    """``max(log(x), floor)`` for ``x >= 0``, with a finite gradient where the clamp holds.

    The logarithm only sees ``x`` where it is above ``exp(floor)`` (double
    ``where``), so ``x = 0`` gives ``floor`` and a zero gradient, not nan.
    """
    out = call_native(xp, "clamped_log", x, floor)
    if out is not NotImplemented:
        return out
    above = x > math.exp(floor)
    return xp.where(above, xp.log(xp.where(above, x, 1.0)), floor)


def clamped_log1p(xp: ModuleType, x: Any, floor: float) -> Any:
    """``max(log1p(x), floor)`` for ``x >= -1``, finite gradient where the clamp holds."""
    out = call_native(xp, "clamped_log1p", x, floor)
    if out is not NotImplemented:
        return out
    above = x > math.expm1(floor)  # log1p(x) > floor  <=>  x > expm1(floor)
    return xp.where(above, xp.log1p(xp.where(above, x, 0.0)), floor)


def clamp_min(xp: ModuleType, x: Any, lower: float) -> Any:
    """``max(x, lower)`` as torch's ``clamp_min``: nan stays nan, and the gradient at
    exactly ``lower`` passes through (derivative 1), unlike ``maximum``'s one half."""
    out = call_native(xp, "clamp_min", x, lower)
    if out is not NotImplemented:
        return out
    return xp.where(x < lower, lower, x)


def sqrt_zero_gradient(xp: ModuleType, s: Any) -> Any:
    """``sqrt(s)`` for ``s >= 0`` whose gradient at ``s == 0`` is 0 instead of inf
    (a double ``where``), as torch's norms give at a zero vector."""
    out = call_native(xp, "sqrt_zero_gradient", s)
    if out is not NotImplemented:
        return out
    zero = s == 0
    return xp.where(zero, 0.0, xp.sqrt(xp.where(zero, 1.0, s)))


def sum_of_products(xp: ModuleType, a: Any, b: Any, axis: int) -> Any:
    """``sum(a * b, axis)`` for real arrays that broadcast, in one call where the library
    has a dot-product kernel (NumPy's ``vecdot``, which keeps no ``a * b``; torch's)."""
    out = call_native(xp, "sum_of_products", a, b, axis)
    if out is not NotImplemented:
        return out
    return xp.sum(a * b, axis=axis)


def logsumexp(xp: ModuleType, x: Any, axis: int, keepdims: bool = False) -> Any:
    """``log(sum(exp(x), axis))``, shifted by the maximum so that nothing overflows.

    Rows whose maximum is infinite are shifted by 0 instead, so that a row of
    all ``-inf`` gives ``-inf`` (not nan) and ``+inf`` gives ``+inf``.
    """
    out = call_native(xp, "logsumexp", x, axis, keepdims)
    if out is not NotImplemented:
        return out
    peak = xp.max(x, axis=axis, keepdims=True)
    shift = xp.where(xp.isfinite(peak), peak, 0.0)
    shift = stop_gradient(shift)
    out = xp.log(xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)) + shift
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax(xp: ModuleType, x: Any, axis: int) -> Any:
    """Log-probabilities along ``axis``: ``(x - max) - log(sum(exp(x - max)))``.

    The maximum is subtracted first and the log-sum second; the shorter
    ``x - logsumexp(x)`` would add the maximum back before subtracting it and
    round the result to the spacing of floats near the maximum (at logits of
    1e4 in float32 that turns ``log 2`` into 0.69336). Rows whose maximum is
    infinite are shifted by 0. An empty ``x`` is returned as it is (Dask cannot
    take the maximum of an empty chunk).
    """
    out = call_native(xp, "log_softmax", x, axis)
    if out is not NotImplemented:
        return out
    if any(n == 0 for n in x.shape):
        return x
    peak = xp.max(x, axis=axis, keepdims=True)
    shifted = x - stop_gradient(xp.where(xp.isfinite(peak), peak, 0.0))
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def take_along_axis(xp: ModuleType, x: Any, indices: Any, axis: int) -> Any:
    """``x`` gathered at integer ``indices`` along ``axis`` (shapes as ``take_along_axis``).

    ``indices`` has ``x``'s number of dimensions, size 1 along ``axis`` or more.
    Libraries without ``take_along_axis`` (Dask) get an equivalent one-hot
    selection: ``sum(where(indices == arange(C), x, 0))``, which builds a
    temporary of ``indices``'s shape times ``C``. Indices must be in range; any
    integer dtype works (they are cast to the library's indexing dtype, which
    torch requires).
    """
    out = call_native(xp, "take_along_axis", x, indices, axis)
    if out is not NotImplemented:
        return out
    if hasattr(xp, "take_along_axis"):
        index_dtype = indexing_dtype(xp)
        if indices.dtype != index_dtype:
            indices = xp.astype(indices, index_dtype)
        return xp.take_along_axis(x, indices, axis=axis)
    axis = axis % x.ndim
    n_classes = x.shape[axis]
    # Move the gathered axis last, compare with every class, reduce it away.
    x_last = xp.moveaxis(x, axis, -1)
    idx_last = xp.moveaxis(indices, axis, -1)
    classes = xp.arange(n_classes, dtype=indices.dtype)
    hits = idx_last[..., None] == classes
    picked = xp.sum(xp.where(hits, x_last[..., None, :], 0.0), axis=-1)
    return xp.moveaxis(picked, -1, axis)


# --- blocked evaluation -------------------------------------------------------------

#: Below this many elements a formula runs whole: its temporaries are small anyway.
MIN_BLOCKED_ELEMENTS = 1 << 19


def reduce_blockwise(
    xp: ModuleType,
    formula: Callable[..., Any],
    operands: Sequence[Any],
    reduction: str,
    *,
    split: Sequence[bool] | None = None,
    row_elements: int | None = None,
) -> Any:
    """``reduce(formula(*operands), reduction)``, in blocks of rows where that pays.

    ``formula`` maps the operands to the unreduced loss, whose leading axis is
    the operands' leading (row) axis: elementwise losses, or losses that reduce
    the trailing axes of each row. For ``'sum'`` and ``'mean'`` on large eager
    arrays of a library whose backend allows it (NumPy; torch on the CPU when
    autograd does not record), the rows are cut into blocks of the size the
    backend asks for (its ``blockwise_elements`` block, some 10^4 elements, a
    fraction of a core's L2 cache); each block is evaluated and summed while
    its temporaries are still in cache, and the block sums are added. A
    formula of many passes then costs little more than one pass over the data,
    instead of allocating and filling a fresh full-size array per operation.
    Everywhere else (``'none'``, lazy or traced arrays, autograd, 16-bit
    floats, small arrays) the formula runs once on the whole operands.

    Parameters
    ----------
    operands
        Arrays, Python numbers or ``None``, passed to ``formula`` in order.
    split
        Which operands have the leading axis to cut (the others are passed
        whole to every block). By default: the arrays with the largest number
        of dimensions whose leading size is the largest (broadcasting from the
        right leaves the others whole).
    row_elements
        Elements of the widest temporary per row, when the formula builds a
        wider one than its operands (default: the widest operand's row).
    """
    plan = None
    if reduction != "none" and (row_elements is not None or not _all_small(operands)):
        plan = _block_plan(xp, operands, split, row_elements)
    if plan is None:
        return _reduction.reduce(xp, formula(*operands), reduction)
    split, n_rows, rows = plan
    parts = []
    count = 0
    for start in range(0, n_rows, rows):
        stop = start + rows
        block = [a[start:stop] if cut else a for a, cut in zip(operands, split)]
        loss = formula(*block)
        parts.append(xp.sum(loss))
        count += math.prod(loss.shape)
    total = xp.sum(xp.stack(parts))
    return total if reduction == "sum" else total / count


def _all_small(operands: Sequence[Any]) -> bool:
    """Whether every array operand is known to hold fewer than ``MIN_BLOCKED_ELEMENTS``:
    the quick answer of small calls, before any planning."""
    for a in operands:
        shape = getattr(a, "shape", None)
        if shape is not None and (None in shape
                                  or not math.prod(shape) < MIN_BLOCKED_ELEMENTS):
            return False
    return True


def _block_plan(xp, operands, split, row_elements):
    """``(split, n_rows, rows_per_block)`` when blocked evaluation pays, else ``None``."""
    block_elements = native(xp, "blockwise_elements")
    if block_elements is None:
        return None
    arrays = [a for a in operands if hasattr(a, "shape")]
    largest = max((math.prod(a.shape) for a in arrays), default=0)
    if row_elements is None and largest < MIN_BLOCKED_ELEMENTS:
        return None  # the common quick answer for small arrays
    ndim = max(a.ndim for a in arrays)
    if ndim == 0:
        return None
    if split is None:
        n_rows = max(a.shape[0] for a in arrays if a.ndim == ndim)
        split = [hasattr(a, "shape") and a.ndim == ndim and a.shape[0] == n_rows
                 for a in operands]
    else:
        n_rows = next(a.shape[0] for a, cut in zip(operands, split) if cut)
    if row_elements is None:
        row_elements = max(math.prod(a.shape[1:]) for a in arrays)
    if n_rows < 2 or n_rows * row_elements < MIN_BLOCKED_ELEMENTS:
        return None
    if any(needs_float32_accumulation(a.dtype) for a in arrays):
        return None
    per_block = block_elements(arrays)
    if per_block is None:
        return None
    rows = max(1, per_block // max(row_elements, 1))
    if 2 * rows > n_rows:
        return None
    return split, n_rows, rows
