"""Numerically stable building blocks, written against the array API.

Each function takes the namespace ``xp`` first and works elementwise with
broadcasting. The formulas are chosen so that neither the value nor the
gradient (through torch autograd or ``jax.grad``) produces an inf or nan that
the mathematical function does not have.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from anyloss._array import stop_gradient

__all__ = ["softplus", "xlogy", "relu", "clamp_min_identity_gradient"]


def softplus(xp: ModuleType, x: Any) -> Any:
    """``log(1 + exp(x))``, finite for every finite ``x``.

    Computed as ``logaddexp(0, x)``, which never overflows: for ``x = 1000``
    it gives 1000, where the naive formula gives inf.

    >>> softplus(xp, xp.asarray([-1000.0, 0.0, 1000.0]))   # doctest: +SKIP
    array([0., 0.69314718, 1000.])
    """
    return xp.logaddexp(0.0, x)


def xlogy(xp: ModuleType, x: Any, y: Any) -> Any:
    """``x * log(y)``, defined as 0 wherever ``x == 0`` (even where ``y == 0``).

    Uses the double-``where`` pattern: the logarithm only ever sees ``y`` where
    ``x != 0``, so ``log(0)`` cannot put a nan into the gradient of the
    masked-out elements.

    >>> xlogy(xp, xp.asarray([0.0, 2.0]), xp.asarray([0.0, 3.0]))   # doctest: +SKIP
    array([0., 2.19722458])
    """
    zero = x == 0
    safe_y = xp.where(zero, 1.0, y)
    return xp.where(zero, 0.0, x * xp.log(safe_y))


def relu(xp: ModuleType, x: Any) -> Any:
    """``max(x, 0)`` elementwise, the hinge of the margin losses."""
    return xp.maximum(x, 0.0)


def clamp_min_identity_gradient(xp: ModuleType, x: Any, lower: float) -> Any:
    """``max(x, lower)`` in value, while the gradient is that of ``x`` itself.

    This is torch's "clamp under ``no_grad``" idiom (used by
    ``gaussian_nll_loss`` for its ``eps``) in a form that works for every
    library: below ``lower`` the value is ``(x - stop_gradient(x)) + lower``,
    which equals ``lower`` exactly and has derivative 1 with respect to ``x``.
    """
    return xp.where(x < lower, (x - stop_gradient(x)) + lower, x)
