"""The common first step of every loss: resolve the namespace, the dtype and the shape.

:func:`elementwise_operands` checks that the arrays of a call come from one
library, picks the floating dtype the loss computes in, casts integer operands
to it (as torch does when it promotes an int64 target against a float input)
and checks that the shapes broadcast, with torch's error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from anyloss._array import float_dtype, namespace
from anyloss._validate import broadcast_shape

__all__ = ["elementwise_operands"]


def elementwise_operands(
    func: str,
    arrays: Mapping[str, Any],
    *,
    complex_ok: bool = False,
) -> tuple[ModuleType, list[Any]]:
    """Namespace and dtype-matched arrays for an elementwise loss ``func``.

    Parameters
    ----------
    func
        Name of the public function, for error messages.
    arrays
        Argument name to array, in positional order.
    complex_ok
        Whether complex input is allowed (only ``l1_loss`` allows it).

    Returns
    -------
    xp, arrays
        The shared namespace, and the arrays in the order given, each of the
        loss's floating dtype.

    Raises
    ------
    TypeError
        Non-arrays, arrays of two libraries, or no floating array at all.
    ValueError
        Shapes that do not broadcast.
    """
    xp = namespace(func, arrays)
    values = list(arrays.values())
    dtype = float_dtype(func, xp, *values, complex_ok=complex_ok)
    broadcast_shape(*(a.shape for a in values))
    return xp, [a if a.dtype == dtype else xp.astype(a, dtype) for a in values]
