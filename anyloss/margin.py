r"""Margin losses on ±1 targets: ``soft_margin_loss``, ``hinge_embedding_loss``, ``margin_ranking_loss``.

Targets are meant to hold 1 or -1 (any real or integer dtype). Shapes
broadcast; the unreduced loss has the broadcast shape.
"""

from __future__ import annotations

from typing import Any

from anyloss import _ops, _reduction
from anyloss._array import float_dtype, namespace
from anyloss._operands import elementwise_operands
from anyloss._validate import broadcast_shape

__all__ = ["soft_margin_loss", "hinge_embedding_loss", "margin_ranking_loss"]


def soft_margin_loss(
    input: Any,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Two-class logistic loss, :math:`\ell_n = \log(1 + e^{-y_n x_n})`.

    Computed as ``softplus(-y x)``, which stays finite where
    :math:`e^{-y x}` overflows (torch's kernel returns inf there).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(soft_margin_loss(np.asarray([0.0]), np.asarray([1.0]))), 6)
    0.693147
    """
    xp, (input, target) = elementwise_operands(
        "soft_margin_loss", {"input": input, "target": target}
    )
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss = _ops.softplus(xp, -target * input)
    return _reduction.reduce(xp, loss, reduction)


def hinge_embedding_loss(
    input: Any,
    target: Any,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Hinge embedding loss, for learning whether two inputs are similar.

    .. math::

        \ell_n = [y_n \ne -1]\, x_n + [y_n \ne 1]\, \max(0, \mathrm{margin} - x_n)

    For targets of 1 and -1 this is the textbook
    :math:`x_n` if :math:`y_n = 1`, :math:`\max(0, \mathrm{margin} - x_n)` if
    :math:`y_n = -1`. Any other target value takes *both* terms, as torch does.
    The result has the input's dtype.

    Examples
    --------
    >>> import numpy as np
    >>> hinge_embedding_loss(np.asarray([0.3, 0.3]), np.asarray([1, -1]), reduction="none")
    array([0.3, 0.7])
    """
    xp = namespace("hinge_embedding_loss", {"input": input, "target": target})
    float_dtype("hinge_embedding_loss", xp, input)
    broadcast_shape(input.shape, target.shape)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    hinge = xp.where(target != 1, _ops.relu(xp, margin - input), 0.0)
    identity = xp.where(target != -1, input, 0.0)
    return _reduction.reduce(xp, hinge + identity, reduction)


def margin_ranking_loss(
    input1: Any,
    input2: Any,
    target: Any,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Any:
    r"""Ranking loss for pairs, :math:`\ell_n = \max(0, -y_n (x^{(1)}_n - x^{(2)}_n) + \mathrm{margin})`.

    ``target`` 1 means ``input1`` should rank higher, -1 that ``input2`` should.

    Raises
    ------
    ValueError
        When the three arrays do not have the same number of dimensions (torch
        refuses them even where they would broadcast).

    Examples
    --------
    >>> import numpy as np
    >>> margin_ranking_loss(np.asarray([1.0, 1.0]), np.asarray([0.0, 0.0]),
    ...                     np.asarray([1.0, -1.0]), reduction="none")
    array([0., 1.])
    """
    arrays = {"input1": input1, "input2": input2, "target": target}
    xp = namespace("margin_ranking_loss", arrays)
    reduction = _reduction.resolve(reduction, size_average, reduce)
    if not input1.ndim == input2.ndim == target.ndim:
        raise ValueError(
            "margin_ranking_loss : All input tensors should have same dimension but got "
            f"sizes: input1: {tuple(input1.shape)}, input2: {tuple(input2.shape)}, "
            f"target: {tuple(target.shape)} "
        )
    xp, (input1, input2, target) = elementwise_operands("margin_ranking_loss", arrays)
    loss = _ops.relu(xp, -target * (input1 - input2) + margin)
    return _reduction.reduce(xp, loss, reduction)
