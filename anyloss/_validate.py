"""Checks shared by the losses, with messages worded as ``torch.nn.functional`` words them.

Checks of options and shapes always run. Checks of array *values* need the
host to see the data, so they run only on eager arrays (see
:func:`anyloss._array.is_eager`) and are skipped under ``jax.jit`` and for Dask.
"""

from __future__ import annotations

import warnings
from typing import Any

from anyloss._array import is_eager, isdtype
from anyloss._registry import Kernel, call, declare

__all__ = [
    "broadcast_shape",
    "shape_text",
    "warn_if_shapes_differ",
    "check_same_shape_as_input",
    "any_true",
    "extrema",
]

declare(
    Kernel("extrema", "torch", "block", "torch:extrema", "torch.aminmax"),
    Kernel("extrema", "numpy", "block", "numpy.blocks:extrema", "np.minimum/maximum.reduce"),
)


def broadcast_shape(*shapes: tuple) -> tuple:
    """The shape that arrays of ``shapes`` broadcast to.

    Raises
    ------
    ValueError
        torch's message, naming the first mismatching dimension from the right:
        ``"The size of tensor a (2) must match the size of tensor b (3) at
        non-singleton dimension 0"``.
    """
    first = tuple(shapes[0]) if shapes else ()
    if all(tuple(shape) == first for shape in shapes[1:]):
        return first  # the common case, answered without the loop over axes
    result: tuple = ()
    for shape in shapes:
        result = _broadcast_two(result, tuple(shape))
    return result


def _broadcast_two(a: tuple, b: tuple) -> tuple:
    ndim = max(len(a), len(b))
    a = (1,) * (ndim - len(a)) + a
    b = (1,) * (ndim - len(b)) + b
    for i in reversed(range(ndim)):
        known = _is_known(a[i]) and _is_known(b[i])
        if known and a[i] != b[i] and a[i] != 1 and b[i] != 1:
            raise ValueError(
                f"The size of tensor a ({a[i]}) must match the size of tensor b "
                f"({b[i]}) at non-singleton dimension {i}"
            )
    return tuple(size_b if size_a == 1 else size_a for size_a, size_b in zip(a, b, strict=True))


def _is_known(n: Any) -> bool:
    """Lazy libraries give ``None`` (or ``nan`` in Dask) for a size not known yet."""
    return n is not None and n == n


def shape_text(shape: tuple) -> str:
    """A shape written as torch's error messages write sizes: ``[3, 4]``."""
    return "[" + ", ".join(str(n) for n in shape) + "]"


def warn_if_shapes_differ(input: Any, target: Any) -> None:
    """torch's UserWarning for a target whose shape differs from the input's.

    The loss then broadcasts the two, which is rarely what was meant.
    """
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(
            f"Using a target size {tuple(target.shape)} that is different to the input "
            f"size {tuple(input.shape)}. This will likely lead to incorrect results due "
            "to broadcasting. Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )


def check_same_shape_as_input(weight: Any, input: Any) -> None:
    """The per-element ``weight`` of l1/mse/huber must have exactly the input's shape."""
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError("Weights and input must have the same size.")


def any_true(xp: Any, condition: Any) -> bool:
    """Whether any element of the boolean array ``condition`` is true.

    Always ``False`` for a lazy array: its values are not looked at, so that a
    check never forces a Dask compute or breaks a JAX trace.
    """
    if not is_eager(condition):
        return False
    return bool(xp.any(condition))


def extrema(xp: Any, x: Any) -> tuple[Any, Any]:
    """``(min, max)`` of a non-empty eager ``x`` as Python numbers (ints for an integer
    ``x``); a nan anywhere makes both nan. Where the library has one kernel for the
    pair (``torch.aminmax``), it is used: value checks run on every call, and their
    cost is a few operations and one look at the host.
    """
    out = call("block", "extrema", xp, x)
    if out is not NotImplemented:
        return out
    to_python = int if isdtype(xp, x.dtype, "integral") else float
    return to_python(xp.min(x)), to_python(xp.max(x))
