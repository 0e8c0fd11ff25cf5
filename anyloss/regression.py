r"""Regression losses: ``l1_loss``, ``mse_loss``, ``huber_loss`` and ``smooth_l1_loss``.

Each compares a prediction ``input`` with a ``target`` element by element.
Shapes: ``input`` and ``target`` of any shape that broadcast together (a
UserWarning is raised when they differ, as torch does); the unreduced loss has
the broadcast shape, a reduced one is 0-d.

The optional per-element ``weight`` of ``l1_loss``, ``mse_loss`` and
``huber_loss`` must have exactly the input's shape. It multiplies the
unreduced loss; ``'sum'`` sums the product. ``'mean'`` follows torch, which
differs between the losses: ``l1_loss`` and ``mse_loss`` divide by
:math:`\sum w`, ``huber_loss`` by the number of elements.
"""

from __future__ import annotations

from typing import Any

from anyloss import _blocked, _ops, _reduction, _registry
from anyloss._array import Array, numpy_scalar_results
from anyloss._operands import elementwise_operands
from anyloss._registry import Kernel, kernels
from anyloss._validate import check_same_shape_as_input, warn_if_shapes_differ

__all__ = ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"]


@numpy_scalar_results
@kernels(
    Kernel("l1_loss", "numpy", "checked", "numpy.float16:l1_loss",
           "the formula in float32 (float16 converted by compiled loops, or NumPy's casts "
           "without numba)", "float16 NumPy arrays"),
)
def l1_loss(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Array | None = None,
) -> Array:
    r"""Mean absolute error, :math:`\ell_n = |x_n - y_n|`.

    Real and complex input are accepted; for complex input :math:`|\cdot|` is
    the modulus and the loss is real.

    Parameters
    ----------
    input, target
        Arrays of one library whose shapes broadcast.
    size_average, reduce
        Deprecated; when either is given it overrides ``reduction`` (with a
        warning), as in torch.
    reduction
        ``'none'`` | ``'mean'`` | ``'sum'``.
    weight
        Optional per-element weight of the input's shape; ``'mean'`` then
        divides by ``sum(weight)``.

    Examples
    --------
    >>> import numpy as np
    >>> float(l1_loss(np.asarray([1.0, 2.0]), np.asarray([0.0, 4.0])))
    1.5
    """
    arrays = {"input": input, "target": target}
    xp, (input, target) = elementwise_operands("l1_loss", arrays, complex_ok=True)
    warn_if_shapes_differ(input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("checked", "l1_loss", xp, input, target, reduction=reduction,
                          weight=weight)
    if loss is not NotImplemented:
        return loss

    def absolute_error(x, y):
        return _ops.absolute(xp, x - y)

    return _weighted_reduce("l1_loss", xp, absolute_error, input, target, weight, reduction,
                            mean_over_weight=True)


@numpy_scalar_results
@kernels(
    Kernel("mse_loss", "numpy", "checked", "numpy.float16:mse_loss",
           "the formula in float32 (float16 converted by compiled loops, or NumPy's casts "
           "without numba)", "float16 NumPy arrays"),
)
def mse_loss(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Array | None = None,
) -> Array:
    r"""Mean squared error, :math:`\ell_n = (x_n - y_n)^2`.

    Arguments as in :func:`l1_loss`; complex input is not supported.

    Examples
    --------
    >>> import numpy as np
    >>> float(mse_loss(np.asarray([1.0, 2.0]), np.asarray([0.0, 4.0])))
    2.5
    """
    xp, (input, target) = elementwise_operands("mse_loss", {"input": input, "target": target})
    warn_if_shapes_differ(input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _registry.call("checked", "mse_loss", xp, input, target, reduction=reduction,
                          weight=weight)
    if loss is not NotImplemented:
        return loss

    def squared_error(x, y):
        diff = x - y
        return diff * diff

    return _weighted_reduce("mse_loss", xp, squared_error, input, target, weight, reduction,
                            mean_over_weight=True)


@numpy_scalar_results
@kernels(
    Kernel("huber_loss", "numpy", "first", "numpy.elementwise:huber_loss",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape; no weight",
           needs="numba"),
)
def huber_loss(
    input: Array,
    target: Array,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Array | None = None,
) -> Array:
    r"""Huber loss: quadratic for small errors, linear beyond ``delta``.

    .. math::

        \ell_n = \begin{cases}
            \tfrac12 (x_n - y_n)^2 & |x_n - y_n| < \delta \\
            \delta \, (|x_n - y_n| - \tfrac12 \delta) & \text{otherwise}
        \end{cases}

    Parameters
    ----------
    delta
        The threshold, > 0.
    weight
        Optional per-element weight of the input's shape; ``'mean'`` is the
        plain mean of the weighted loss (torch's choice for this loss).

    Raises
    ------
    ValueError
        ``delta <= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> float(huber_loss(np.asarray([0.5, 3.0]), np.asarray([0.0, 0.0])))
    1.3125
    """
    xp, (input, target) = elementwise_operands("huber_loss", {"input": input, "target": target})
    warn_if_shapes_differ(input, target)
    if not delta > 0:
        raise ValueError("huber_loss does not support non-positive values for delta.")
    reduction = _reduction.resolve(reduction)
    loss = _registry.call("first", "huber_loss", xp, input, target, reduction=reduction,
                          delta=delta, weight=weight)
    if loss is not NotImplemented:
        return loss
    return _weighted_reduce("huber_loss", xp, _huber(xp, delta), input, target, weight,
                            reduction, mean_over_weight=False)


@numpy_scalar_results
@kernels(
    Kernel("smooth_l1_loss", "numpy", "first", "numpy.elementwise:smooth_l1_loss",
           "one numba pass",
           "C-contiguous float32/64 arrays of one shape",
           needs="numba"),
)
def smooth_l1_loss(
    input: Array,
    target: Array,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Array:
    r"""Smooth L1 loss: Huber loss divided by its threshold ``beta``.

    .. math::

        \ell_n = \begin{cases}
            \tfrac12 (x_n - y_n)^2 / \beta & |x_n - y_n| < \beta \\
            |x_n - y_n| - \tfrac12 \beta & \text{otherwise}
        \end{cases}

    ``beta = 0`` is exactly :func:`l1_loss`.

    Raises
    ------
    ValueError
        ``beta < 0``.

    Examples
    --------
    >>> import numpy as np
    >>> float(smooth_l1_loss(np.asarray([0.5, 3.0]), np.asarray([0.0, 0.0])))
    1.3125
    """
    xp, (input, target) = elementwise_operands(
        "smooth_l1_loss", {"input": input, "target": target}
    )
    warn_if_shapes_differ(input, target)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    loss = _registry.call("first", "smooth_l1_loss", xp, input, target, reduction=reduction,
                          beta=beta)
    if loss is not NotImplemented:
        return loss
    if beta == 0:
        return _blocked.reduce_blockwise(xp, lambda x, y: _ops.absolute(xp, x - y),
                                         (input, target), reduction)
    # Huber's loss over beta; the division is done once on a sum or a mean.
    if reduction == "none":
        return _huber(xp, beta)(input, target) / beta
    return _blocked.reduce_blockwise(xp, _huber(xp, beta), (input, target), reduction) / beta


def _huber(xp: Any, delta: float):
    r"""The elementwise Huber loss ``(x, y) -> loss`` of threshold ``delta``.

    With :math:`c = \operatorname{clip}(x - y, -\delta, \delta)` it is
    :math:`c\,(x - y - c/2)`: :math:`\tfrac12 (x-y)^2` inside the threshold and
    :math:`\delta(|x - y| - \delta/2)` outside, rounded exactly as torch's kernel
    rounds either branch, in five passes instead of a ``where`` between two
    computed branches. Its gradient is :math:`c` everywhere (at :math:`|x - y| = \delta`
    whatever gradient the library gives ``clip``).
    """

    def huber(x, y):
        diff = x - y
        clipped = _ops.clip(xp, diff, -delta, delta)
        # + 0.0: a difference of -0.0 gives +0.0, as torch's 0.5 d**2 does (not -0.0 * 0).
        return clipped * (diff - 0.5 * clipped) + 0.0

    return huber


def _weighted_reduce(
    func: str,
    xp: Any,
    formula: Any,
    input: Any,
    target: Any,
    weight: Any | None,
    reduction: str,
    *,
    mean_over_weight: bool,
) -> Any:
    """The loss ``formula(input, target)``, weighted by ``weight`` (if any), reduced.

    ``mean_over_weight`` selects torch's ``'mean'``: the weighted sum over the
    sum of the weights (l1, mse), or the plain mean of the weighted loss (huber).
    Without a weight the formula is evaluated blockwise (see
    :func:`anyloss._blocked.reduce_blockwise`).
    """
    if weight is None:
        return _blocked.reduce_blockwise(xp, formula, (input, target), reduction)
    loss = formula(input, target)
    _, (loss, weight) = elementwise_operands(func, {"input": loss, "weight": weight})
    check_same_shape_as_input(weight, input)
    weighted = loss * weight
    if reduction == "mean" and mean_over_weight:
        return _reduction.total(xp, weighted) / _reduction.total(xp, weight)
    return _reduction.reduce(xp, weighted, reduction)
