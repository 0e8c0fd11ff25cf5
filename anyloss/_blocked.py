"""Blocked evaluation: a reduced loss computed in cache-sized blocks of rows.

:func:`reduce_blockwise` evaluates an elementwise loss and its reduction in
cache-sized blocks of rows where the library is eager and nothing needs the
unreduced loss: the temporaries of a formula then never leave the CPU cache.
The block size is the library's ``blockwise_elements`` building block (declared
below); without one, or with fast paths at level ``'none'``, the formula runs
once on the whole operands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from anyloss import _reduction
from anyloss._array import needs_float32_accumulation
from anyloss._registry import Kernel, call, declare

__all__ = ["reduce_blockwise", "MIN_BLOCKED_ELEMENTS"]

declare(
    Kernel("blockwise_elements", "torch", "block", "torch:blockwise_elements",
           "2^18 elements per block", "CPU, not under autograd"),
    Kernel("blockwise_elements", "numpy", "block", "numpy.blocks:blockwise_elements",
           "2^17 elements per block"),
)

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
        block = [a[start:stop] if cut else a for a, cut in zip(operands, split, strict=True)]
        loss = formula(*block)
        parts.append(xp.sum(loss))
        count += math.prod(loss.shape)
    total = xp.sum(xp.stack(parts))
    return total if reduction == "sum" else total / count


def _all_small(operands: Sequence[Any]) -> bool:
    """Whether every array operand is known to hold fewer than ``MIN_BLOCKED_ELEMENTS``:
    the quick answer of small calls, before any planning."""
    for a in operands:
        shape = _shape(a)
        if shape is not None and (None in shape
                                  or not math.prod(shape) < MIN_BLOCKED_ELEMENTS):
            return False
    return True


def _shape(operand: Any) -> tuple | None:
    """An array operand's shape; ``None`` for a Python number or ``None`` (asked first:
    torch.compile cannot ask a symbolic number for attributes)."""
    if operand is None or isinstance(operand, (int, float)):  # bool is an int
        return None
    return operand.shape


def _block_plan(xp, operands, split, row_elements):
    """``(split, n_rows, rows_per_block)`` when blocked evaluation pays, else ``None``."""
    arrays = [a for a in operands if _shape(a) is not None]
    largest = max([math.prod(a.shape) for a in arrays]) if arrays else 0
    if row_elements is None and largest < MIN_BLOCKED_ELEMENTS:
        return None  # the common quick answer for small arrays
    ndim = max([a.ndim for a in arrays])
    if ndim == 0:
        return None
    if split is None:
        n_rows = max([a.shape[0] for a in arrays if a.ndim == ndim])
        split = [_shape(a) is not None and a.ndim == ndim and a.shape[0] == n_rows
                 for a in operands]
    else:
        n_rows = next(a.shape[0] for a, cut in zip(operands, split, strict=True) if cut)
    if row_elements is None:
        row_elements = max([math.prod(a.shape[1:]) for a in arrays])
    if n_rows < 2 or n_rows * row_elements < MIN_BLOCKED_ELEMENTS:
        return None
    if any(needs_float32_accumulation(a.dtype) for a in arrays):
        return None
    per_block = call("block", "blockwise_elements", xp, arrays)
    if per_block is NotImplemented:
        return None
    rows = max(1, per_block // max(row_elements, 1))
    if 2 * rows > n_rows:
        return None
    return split, n_rows, rows
