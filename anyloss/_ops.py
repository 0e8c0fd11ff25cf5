"""Numerically stable building blocks, written against the array API.

Each function takes the namespace ``xp`` first and works elementwise with
broadcasting. The formulas are chosen so that neither the value nor the
gradient (through torch autograd or ``jax.grad``) produces an inf or nan that
the mathematical function does not have.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from anyloss._array import indexing_dtype, stop_gradient

__all__ = [
    "softplus",
    "log_sigmoid",
    "xlogy",
    "relu",
    "clamp_min_identity_gradient",
    "logsumexp",
    "log_softmax",
    "take_along_axis",
]


def softplus(xp: ModuleType, x: Any) -> Any:
    """``log(1 + exp(x))``, finite for every finite ``x``.

    Computed as ``logaddexp(0, x)``, which never overflows: for ``x = 1000``
    it gives 1000, where the naive formula gives inf.

    >>> softplus(xp, xp.asarray([-1000.0, 0.0, 1000.0]))   # doctest: +SKIP
    array([0., 0.69314718, 1000.])
    """
    return xp.logaddexp(0.0, x)


def log_sigmoid(xp: ModuleType, x: Any) -> Any:
    """``log(1 / (1 + exp(-x)))``, finite for every finite ``x``: ``-softplus(-x)``."""
    return -softplus(xp, -x)


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


def logsumexp(xp: ModuleType, x: Any, axis: int, keepdims: bool = False) -> Any:
    """``log(sum(exp(x), axis))``, shifted by the maximum so that nothing overflows.

    Rows whose maximum is infinite are shifted by 0 instead, so that a row of
    all ``-inf`` gives ``-inf`` (not nan) and ``+inf`` gives ``+inf``.
    """
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
