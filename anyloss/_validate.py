"""Checks shared by the losses, with messages worded as ``torch.nn.functional`` words them.

Checks of options and shapes always run. Checks of array *values* need the
host to see the data, so they run only on eager arrays (see
:func:`anyloss._array.is_eager`) and are skipped under ``jax.jit`` and for Dask.
"""

from __future__ import annotations

import warnings
from typing import Any

from anyloss._array import is_eager, isdtype, sizes_are_numbers, stop_gradient
from anyloss._registry import Kernel, call, declare
from anyloss._tracing import constant_when_traced

__all__ = [
    "warn",
    "shape_for_message",
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


@constant_when_traced
def warn(message: str, *values: Any, stacklevel: int = 2) -> None:
    """Give ``message % values`` (just ``message`` without values) as a ``UserWarning``,
    attributed to the frame ``stacklevel`` frames up from the caller (``warnings.warn``'s
    count, as if the caller had called it).

    Every warning of anyloss goes through here. torch.compile cannot trace
    ``warnings.warn``; it runs this function while it traces a call
    (:func:`~anyloss._tracing.constant_when_traced`), so under torch.compile a warning
    is given when a call is compiled rather than on every call of the compiled code,
    and the graph stays whole. The arguments must then be constants: hence the values
    apart from the template (torch.compile does not fold an f-string into a constant).
    """
    warnings.warn(message % values if values else message, UserWarning,
                  stacklevel=stacklevel + 1)


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


def shape_for_message(x: Any) -> tuple:
    """``x``'s shape for a warning: its sizes, or ``None`` for each where they are not
    numbers here (:func:`~anyloss._array.sizes_are_numbers`)."""
    if sizes_are_numbers(x):
        return tuple(x.shape)
    return (None,) * x.ndim


def warn_if_shapes_differ(input: Any, target: Any) -> None:
    """torch's UserWarning for a target whose shape differs from the input's.

    The loss then broadcasts the two, which is rarely what was meant.
    """
    if tuple(target.shape) != tuple(input.shape):
        warn(
            "Using a target size %s that is different to the input size %s. This will "
            "likely lead to incorrect results due to broadcasting. Please ensure they have "
            "the same size.",
            shape_for_message(target), shape_for_message(input), stacklevel=3,
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
    x = stop_gradient(x)  # a value read, not part of the loss (torch warns otherwise)
    return to_python(xp.min(x)), to_python(xp.max(x))
