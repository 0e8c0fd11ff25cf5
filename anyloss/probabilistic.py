r"""Losses of probability distributions: ``kl_div``, ``poisson_nll_loss``, ``gaussian_nll_loss``.

``kl_div`` compares two distributions; the two negative log-likelihoods score
a ``target`` sample under a distribution whose parameters the ``input`` gives.
Shapes broadcast; the unreduced loss has the broadcast shape.
"""

from __future__ import annotations

import math
from typing import Any

from anyloss import _blocked, _ops, _reduction, _registry
from anyloss._array import Array, is_eager, namespace, numpy_scalar_results, records_gradient
from anyloss._operands import elementwise_operands
from anyloss._registry import Kernel, kernels
from anyloss._validate import warn

__all__ = ["kl_div", "poisson_nll_loss", "gaussian_nll_loss"]

_KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


@numpy_scalar_results
@kernels(
    Kernel("kl_div", "numpy", "first", "numpy.elementwise:kl_div",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape",
           needs="numba"),
)
def kl_div(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Array:
    r"""Pointwise Kullback-Leibler divergence, with ``input`` in log space.

    .. math::

        \ell_n = y_n (\log y_n - x_n)
        \qquad\text{or, with ``log_target``,}\qquad
        \ell_n = e^{y_n} (y_n - x_n)

    where :math:`x` are log-probabilities. A zero target contributes 0
    (:math:`0 \log 0 = 0`).

    Parameters
    ----------
    reduction
        ``'none'`` | ``'batchmean'`` | ``'sum'`` | ``'mean'``. ``'batchmean'``
        divides the sum by ``input.shape[0]`` (the sum itself for 0-d input) and
        is the divergence of the math definition; ``'mean'`` divides by the
        number of elements and warns about it, as torch does.
    log_target
        Whether ``target`` holds log-probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.asarray([[0.25, 0.75]]); q = np.asarray([[0.5, 0.5]])
    >>> round(float(kl_div(np.log(q), p, reduction="batchmean")), 6)
    0.130812
    """
    xp, (input, target) = elementwise_operands("kl_div", {"input": input, "target": target})
    if size_average is None and reduce is None and reduction == "mean":
        warn(_KL_MEAN_WARNING, stacklevel=2)
    reduction = _reduction.resolve(
        reduction, size_average, reduce, allowed=(*_reduction.STANDARD, "batchmean")
    )
    loss = _registry.call("first", "kl_div", xp, input, target, reduction=reduction,
                          log_target=log_target)
    if loss is not NotImplemented:
        return loss

    def pointwise(x, y):
        if log_target:
            return xp.exp(y) * (y - x)
        return _ops.xlogy(xp, y, y) - y * x

    if reduction == "batchmean":
        total = _blocked.reduce_blockwise(xp, pointwise, (input, target), "sum")
        return total / input.shape[0] if input.ndim != 0 else total
    return _blocked.reduce_blockwise(xp, pointwise, (input, target), reduction)


@numpy_scalar_results
@kernels(
    Kernel("poisson_nll_loss", "numpy", "first", "numpy.elementwise:poisson_nll_loss",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape",
           needs="numba"),
)
def poisson_nll_loss(
    input: Array,
    target: Array,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Negative log-likelihood of ``target`` under a Poisson distribution of rate ``input``.

    .. math::

        \ell_n = e^{x_n} - y_n x_n \quad\text{(``log_input``)}, \qquad
        \ell_n = x_n - y_n \log(x_n + \varepsilon) \quad\text{(otherwise)}

    dropping the constant :math:`\log(y_n!)`. With ``full``, Stirling's
    approximation of it, :math:`y \log y - y + \tfrac12 \log(2\pi y)`, is
    added where :math:`y_n > 1` (and nothing where :math:`y_n \le 1`).

    Parameters
    ----------
    log_input
        Whether ``input`` is the log of the rate.
    full
        Whether to add the Stirling term.
    eps
        Keeps :math:`\log(x + \varepsilon)` finite at rate 0 when not ``log_input``.

    Examples
    --------
    >>> import numpy as np
    >>> float(poisson_nll_loss(np.asarray([0.0]), np.asarray([2.0])))
    1.0
    """
    xp, (input, target) = elementwise_operands(
        "poisson_nll_loss", {"input": input, "target": target}
    )
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("first", "poisson_nll_loss", xp, input, target, log_input=log_input,
                          full=full, eps=eps, reduction=reduction)
    if loss is not NotImplemented:
        return loss

    def pointwise(x, y):
        if log_input:
            loss = xp.exp(x) - y * x
        else:
            loss = x - y * xp.log(x + eps)
        if full:
            counted = y > 1
            # Without autodiff, a double where: log only ever sees targets > 1 (no
            # warning, no nan). Under autodiff, torch's composite as it is: the masked
            # term's gradient is then 0 times its slope, nan at targets <= 0, as torch's.
            safe = y if records_gradient(y) else xp.where(counted, y, 1.0)
            stirling = safe * xp.log(safe) - safe + 0.5 * xp.log(2 * math.pi * safe)
            loss = loss + xp.where(counted, stirling, 0.0)
        return loss

    return _blocked.reduce_blockwise(xp, pointwise, (input, target), reduction)


@numpy_scalar_results
@kernels(
    Kernel("gaussian_nll_loss", "numpy", "first", "numpy.elementwise:gaussian_nll_loss",
           "one numba pass",
           "C-contiguous float32/64 of one shape; var of that shape, per row or a float",
           needs="numba"),
)
def gaussian_nll_loss(
    input: Array,
    target: Array,
    var: Array,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Array:
    r"""Negative log-likelihood of ``target`` under a normal distribution.

    .. math::

        \ell_n = \tfrac12 \left(\log \max(\sigma^2_n, \varepsilon)
                 + \frac{(x_n - y_n)^2}{\max(\sigma^2_n, \varepsilon)}\right)
                 \;[+\ \tfrac12 \log 2\pi \text{ with ``full``}]

    The clamp at ``eps`` changes the value only: the gradient with respect to
    ``var`` is computed as if no clamp had happened, as in torch.

    Parameters
    ----------
    input
        The means, shape ``(N, *)`` or ``(*)``.
    target
        The samples, shape of ``input`` (or broadcastable to it).
    var
        The variances, non-negative: an array of the input's shape, of the input's
        shape without its last dimension, or of the input's shape with one
        dimension of size 1; or a Python float for all elements.
    full
        Whether to add the constant :math:`\tfrac12 \log 2\pi`.
    eps
        Lower clamp of ``var``.

    Raises
    ------
    ValueError
        ``"var has negative entry/entries"`` (checked on eager arrays) and
        ``"var is of incorrect size"``.

    Examples
    --------
    >>> import numpy as np
    >>> float(gaussian_nll_loss(np.asarray([1.0]), np.asarray([3.0]), 1.0))
    2.0
    """
    arrays = {"input": input, "target": target}
    xp = namespace("gaussian_nll_loss",
                   arrays if isinstance(var, float) else {**arrays, "var": var})
    loss = _registry.call("first", "gaussian_nll_loss", xp, input, target, var, full=full,
                          eps=eps, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    log_var = None  # set for a float var (torch.compile reads no unset closure cell)
    if isinstance(var, float):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        xp, (input, target) = elementwise_operands("gaussian_nll_loss", arrays)
        var = max(var, eps)
        log_var = math.log(var)
    else:
        xp = namespace("gaussian_nll_loss", {**arrays, "var": var})
        if _any_below(xp, var, 0):
            raise ValueError("var has negative entry/entries")
        var = _gaussian_var_shape(xp, var, input)
        xp, (input, target, var) = elementwise_operands(
            "gaussian_nll_loss", {**arrays, "var": var}
        )
    reduction = _reduction.resolve(reduction)

    def pointwise(x, y, v):
        if isinstance(v, float):
            log_v = log_var
        else:
            v = _ops.clamp_min_identity_gradient(xp, v, eps)
            log_v = xp.log(v)
        diff = x - y
        loss = 0.5 * (log_v + diff * diff / v)
        if full:
            loss = loss + 0.5 * math.log(2 * math.pi)
        return loss

    return _blocked.reduce_blockwise(xp, pointwise, (input, target, var), reduction)


def _any_below(xp: Any, x: Any, bound: float) -> bool:
    """Whether an eager ``x`` has an element below ``bound`` (one reduction, no temporary).

    Like ``any(x < bound)``: nan does not count (the minimum of an array with a
    nan is nan, and ``nan < bound`` is false). Lazy arrays are not looked at.
    """
    if not is_eager(x) or any(n == 0 for n in x.shape):
        return False
    return bool(xp.min(x) < bound)


def _gaussian_var_shape(xp: Any, var: Any, input: Any) -> Any:
    """``var`` made to broadcast against ``input`` under torch's three shape rules."""
    if tuple(var.shape) == tuple(input.shape):
        return var
    if tuple(input.shape[:-1]) == tuple(var.shape):
        # One variance per sample (homoscedastic over the last dimension).
        return xp.expand_dims(var, axis=-1)
    if input.ndim == var.ndim and (
        sum(v for i, v in zip(input.shape, var.shape, strict=False) if i != v) == 1
    ):
        # The same number of dimensions, one of them of size 1 in var.
        return var
    raise ValueError("var is of incorrect size")
