r"""Classification losses: ``nll_loss``, ``cross_entropy``, ``binary_cross_entropy``
and ``binary_cross_entropy_with_logits``.

Shapes of the multi-class losses (``C`` classes):

- ``input`` ``(N, C)`` with a class-index ``target`` ``(N,)``;
- unbatched ``input`` ``(C,)`` with a 0-d ``target`` (a ``(1,)`` target is
  accepted too, as torch does);
- K-dimensional ``input`` ``(N, C, d1, ..., dK)`` with ``target``
  ``(N, d1, ..., dK)``.

The unreduced loss has the target's shape. Class indices are integers; a target
equal to ``ignore_index`` contributes 0 and is left out of the ``'mean'``, which
divides by the summed weights :math:`\sum_n w_{y_n}` of the targets that are not
ignored (by their number when there is no ``weight``). When every target is
ignored, ``'mean'`` is nan and ``'sum'`` is 0.

``cross_entropy`` also takes class *probabilities*: a floating ``target`` of the
input's shape. Their ``'mean'`` divides by :math:`N d_1 \cdots d_K`.

Class indices are checked against ``[0, C)`` on eager arrays (``IndexError``).
Lazy arrays (Dask, traced JAX) are not inspected; an invalid index there gives a
nan loss for its element instead of an error.

The binary losses compare ``input`` and ``target`` of equal shapes element by
element; their ``weight`` (and ``pos_weight``) broadcast to that shape, and
their ``'mean'`` is the plain mean of the weighted loss.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_extra as xpx

from anyloss import _blocked, _ops, _reduction, _registry
from anyloss._array import (
    Array,
    float_dtype,
    indexing_dtype,
    is_eager,
    isdtype,
    namespace,
    needs_float32_accumulation,
    numpy_scalar_results,
    records_gradient,
    stop_gradient,
)
from anyloss._class_index import along_class_axis, class_axis, class_index_loss, masks
from anyloss._registry import Kernel, kernels
from anyloss._validate import any_true, broadcast_shape, extrema

__all__ = [
    "nll_loss",
    "cross_entropy",
    "cross_entropy_and_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
]

#: torch's names for dtypes, which its error messages use.
_TORCH_DTYPE_NAMES = {
    "float64": "Double",
    "float32": "Float",
    "float16": "Half",
    "bfloat16": "BFloat16",
    "complex64": "ComplexFloat",
    "complex128": "ComplexDouble",
    "int64": "Long",
    "int32": "Int",
    "int16": "Short",
    "int8": "Char",
    "uint8": "Byte",
    "uint16": "UInt16",
    "uint32": "UInt32",
    "uint64": "UInt64",
    "bool": "Bool",
}

#: The lower clamp of binary_cross_entropy's logarithms.
_LOG_FLOOR = -100.0


@numpy_scalar_results
@kernels(
    Kernel("nll_loss", "torch", "first", "torch:nll_loss", "F.nll_loss",
           "CPU; float32/64; int64 targets; weight of the input's dtype; "
           "not empty"),
    Kernel("nll_loss", "numpy", "first", "numpy.class_losses:nll_loss", "one numba loop",
           "C-contiguous float32/64 (N, C); int64 targets in range", needs="numba"),
)
def nll_loss(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Negative log-likelihood of class indices, given log-probabilities.

    .. math::

        \ell_n = -w_{y_n} \, x_{n, y_n}, \qquad
        \text{mean} = \frac{\sum_n \ell_n}{\sum_n w_{y_n}}

    where the sums run over the targets that are not ``ignore_index``
    (:math:`\ell_n = 0` for those) and :math:`w = 1` without ``weight``.

    Parameters
    ----------
    input
        Log-probabilities, ``(N, C)``, ``(C,)`` or ``(N, C, d1, ..., dK)``.
    target
        Integer class indices in ``[0, C)``: ``(N,)``, 0-d or ``(N, d1, ..., dK)``.
    weight
        Optional 1-d array of ``C`` per-class weights.
    size_average, reduce
        Deprecated; when either is given it overrides ``reduction`` (with a
        warning), as in torch.
    ignore_index
        A target value that is skipped; it may lie outside ``[0, C)`` (255, -1).
    reduction
        ``'none'`` | ``'mean'`` | ``'sum'``.

    Raises
    ------
    TypeError
        A target that is not integer, an input that is not floating.
    ValueError
        Shapes that do not fit together or a weight of the wrong size (torch's
        messages).
    IndexError
        ``"Target 5 is out of bounds."`` for a class index outside ``[0, C)``
        that is not ``ignore_index`` (eager arrays only).

    Examples
    --------
    >>> import numpy as np
    >>> logp = np.log(np.asarray([[0.5, 0.5], [0.25, 0.75]]))
    >>> round(float(nll_loss(logp, np.asarray([0, 1]))), 6)
    0.490415
    """
    func = "nll_loss"
    reduction = _reduction.resolve(reduction, size_average, reduce)
    xp = _class_namespace(func, input, target, weight)
    loss = _registry.call("first", func, xp, input, target, weight,
                          ignore_index=ignore_index, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    xp, input, target, weight = _class_operands(func, input, target, weight, xp)
    target = _check_class_target(input, target, weight)
    plain = _check_class_indices(xp, target, input.shape[class_axis(input)], ignore_index)
    return class_index_loss(xp, input, target, weight, ignore_index, reduction, 0.0, plain)


@numpy_scalar_results
@kernels(
    Kernel("cross_entropy", "torch", "first", "torch:cross_entropy_plain_cpu",
           "the NumPy pass as the custom op anyloss::cross_entropy (autograd, torch.compile) "
           "on contiguous CPU inputs (class indices also 2-d with rows apart) of 2^15 "
           "elements or more; F.cross_entropy otherwise",
           "CPU; float32/64; int64 targets or probabilities of the input's dtype; weight of "
           "the input's dtype; not empty",
           needs="numba", without="F.cross_entropy"),
    Kernel("cross_entropy", "torch", "checked", "torch:cross_entropy",
           "as the first-stage kernel on CPU; F.cross_entropy elsewhere",
           "any device; 16-bit floats in float32", needs="numba", without="F.cross_entropy"),
    Kernel("cross_entropy", "jax", "checked", "jax:cross_entropy",
           "anyloss's formula under jax.jit", "class indices"),
    Kernel("cross_entropy", "numpy", "first", "numpy.cross_entropy:cross_entropy_plain",
           "the compiled pass and a compiled loop over the targets, at any size",
           "float32/64 (N, C), C-contiguous or rows apart; int64 targets in range or "
           "ignored, or probabilities of the input's shape and dtype (C-contiguous); weight "
           "of the input's dtype; no nan or infinite row maximum",
           needs="numba"),
    Kernel("cross_entropy", "numpy", "checked", "numpy.cross_entropy:cross_entropy",
           "one compiled pass over the rows (max, exp-sum, target, smoothing)",
           "class indices, or probabilities of a C-contiguous input (float16 in "
           "float32); 2^15 elements or more", needs="numba",
           without="one blocked NumPy pass on a thread pool (class indices)"),
    Kernel("cross_entropy", "dask", "checked", "dask:cross_entropy",
           "the NumPy pass per chunk",
           "class indices or probabilities, 2-d or more; known chunks"),
)
def cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Array:
    r"""Cross entropy between the softmax of ``input`` logits and a target.

    With class indices :math:`y_n` and label smoothing :math:`\varepsilon`
    (Szegedy et al., 2016, "Rethinking the Inception architecture"), writing
    :math:`p = \operatorname{log\_softmax}(x)` over the class axis:

    .. math::

        \ell_n = (1 - \varepsilon)\, w_{y_n} (-p_{n, y_n})
                 + \frac{\varepsilon}{C} \sum_c w_c (-p_{n, c})

    ignored targets give 0, and ``'mean'`` divides by :math:`\sum_n w_{y_n}` over
    the targets not ignored, as :func:`nll_loss` does (for both terms).

    With class probabilities :math:`q` (a floating target of the input's shape),
    smoothed to :math:`q' = (1-\varepsilon) q + \varepsilon / C`:

    .. math::

        \ell_n = -\sum_c w_c \, q'_{n, c} \, p_{n, c}

    and ``'mean'`` divides by :math:`N d_1 \cdots d_K`.

    Parameters
    ----------
    input
        Logits, ``(N, C)``, ``(C,)`` or ``(N, C, d1, ..., dK)``.
    target
        Integer class indices (shapes as in :func:`nll_loss`) or floating class
        probabilities of the input's shape.
    weight
        Optional 1-d array of ``C`` per-class weights.
    size_average, reduce
        Deprecated; override ``reduction`` when given.
    ignore_index
        Target value skipped by class-index targets. Probability targets only
        accept a negative value (which then has no effect).
    reduction
        ``'none'`` | ``'mean'`` | ``'sum'``.
    label_smoothing
        :math:`\varepsilon \in [0, 1]`.

    Raises
    ------
    TypeError
        A float target for class indices, an integer target for probabilities.
    ValueError
        Bad shapes, weight size, ``label_smoothing`` outside ``[0, 1]``, or a
        non-negative ``ignore_index`` with probability targets.
    IndexError
        A class index out of range (eager arrays only).

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.asarray([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(cross_entropy(logits, np.asarray([0, 1]))), 6)
    0.410038
    """
    reduction = _reduction.resolve(reduction, size_average, reduce)
    loss, operands = _cross_entropy_kernels("cross_entropy", input, target, weight,
                                            ignore_index, reduction, label_smoothing)
    if loss is not NotImplemented:
        return loss
    xp, input, target, weight, probabilities, plain = operands
    if probabilities:
        return _cross_entropy_probabilities(
            xp, input, target, weight, reduction, label_smoothing
        )
    log_probs = _ops.log_softmax(xp, input, axis=class_axis(input))
    return class_index_loss(
        xp, log_probs, target, weight, ignore_index, reduction, label_smoothing, plain
    )


@numpy_scalar_results
@kernels(
    Kernel("cross_entropy_and_grad", "torch", "checked", "torch:cross_entropy_and_grad",
           "the NumPy pass's gradient (anyloss::cross_entropy_fused) on contiguous CPU inputs "
           "(class indices also 2-d with rows apart); F.cross_entropy and autograd "
           "otherwise",
           "any device; 16-bit floats in float32", needs="numba",
           without="F.cross_entropy and autograd"),
    Kernel("cross_entropy_and_grad", "jax", "checked", "jax:cross_entropy_and_grad",
           "jax.vjp of the jitted formula", "class indices"),
    Kernel("cross_entropy_and_grad", "numpy", "first",
           "numpy.cross_entropy:cross_entropy_and_grad_plain",
           "the compiled pass writing the gradient, and compiled loops over the targets, at "
           "any size", "float32/64 (N, C), C-contiguous or rows apart; int64 targets in "
           "range or ignored, or probabilities of the input's shape and dtype "
           "(C-contiguous); weight of the input's dtype; no nan or infinite row maximum",
           needs="numba"),
    Kernel("cross_entropy_and_grad", "numpy", "checked",
           "numpy.cross_entropy:cross_entropy_and_grad",
           "the compiled pass, writing the gradient once",
           "class indices, or probabilities of a C-contiguous input (float16 in "
           "float32); 2^15 elements or more", needs="numba",
           without="the blocked NumPy pass, writing the gradient (class indices)"),
    Kernel("cross_entropy_and_grad", "dask", "checked", "dask:cross_entropy_and_grad",
           "the NumPy pass per chunk",
           "class indices or probabilities, 2-d or more; known chunks"),
)
def cross_entropy_and_grad(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> tuple[Array, Array]:
    r"""``cross_entropy`` and its gradient with respect to ``input``, without autodiff.

    Takes exactly :func:`cross_entropy`'s arguments and returns ``(loss, grad)``:
    ``loss`` as :func:`cross_entropy` returns it, ``grad`` of ``input``'s shape
    and dtype, equal to torch autograd's gradient of ``F.cross_entropy`` (for
    ``reduction='none'``, of the losses' sum). With :math:`p` the softmax over the
    class axis, class indices :math:`y_n`, smoothing :math:`\varepsilon` and
    weights :math:`w` (:math:`W = \sum_c w_c`):

    .. math::

        \frac{\partial \ell_n}{\partial x_{n,c}}
            = \Bigl((1-\varepsilon) w_{y_n} + \frac{\varepsilon}{C} W\Bigr) p_{n,c}
              - (1-\varepsilon) w_{y_n} [c = y_n] - \frac{\varepsilon}{C} w_c

    times the reduction's factor (``1 / sum_n w_{y_n}`` for ``'mean'``); ignored
    targets have a zero gradient. For class probabilities :math:`q'` (smoothed),
    :math:`\partial \ell_n / \partial x_{n,c} = (\sum_k w_k q'_{n,k})\, p_{n,c} - w_c q'_{n,c}`.

    NumPy (and Dask, chunk by chunk) write the gradient in the blocked pass of
    :mod:`anyloss.backends.numpy`; torch and JAX differentiate their fast path
    with their autodiff; other libraries (array-api-strict, CuPy, or fast paths
    switched off) evaluate the formula above in the array API.

    >>> import numpy as np
    >>> loss, grad = cross_entropy_and_grad(np.asarray([[0.0, 0.0]]), np.asarray([1]))
    >>> grad
    array([[ 0.5, -0.5]])
    """
    reduction = _reduction.resolve(reduction, size_average, reduce)
    result, operands = _cross_entropy_kernels("cross_entropy_and_grad", input, target, weight,
                                              ignore_index, reduction, label_smoothing)
    if result is not NotImplemented:
        return result
    xp, input, target, weight, probabilities, plain = operands
    if probabilities:
        loss = _cross_entropy_probabilities(xp, input, target, weight, reduction,
                                            label_smoothing)
        return loss, _probabilities_grad(xp, input, target, weight, reduction, label_smoothing)
    log_probs = _ops.log_softmax(xp, input, axis=class_axis(input))
    loss = class_index_loss(
        xp, log_probs, target, weight, ignore_index, reduction, label_smoothing, plain
    )
    grad = _class_index_grad(xp, input, target, weight, ignore_index, reduction,
                             label_smoothing)
    return loss, grad


@numpy_scalar_results
@kernels(
    Kernel("binary_cross_entropy", "numpy", "first",
           "numpy.elementwise:binary_cross_entropy", "one numba pass",
           "C-contiguous float32/64 of one shape; weight of that shape, (C,), per row or "
           "one value; values in [0, 1]", needs="numba"),
)
def binary_cross_entropy(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Binary cross entropy between probabilities ``input`` and ``target``.

    .. math::

        \ell_n = -w_n \left[ y_n \max(\log x_n, -100)
                 + (1 - y_n) \max(\log(1 - x_n), -100) \right]

    The clamp at -100 keeps the loss finite at :math:`x_n \in \{0, 1\}`.

    Parameters
    ----------
    input
        Probabilities in ``[0, 1]``, any shape.
    target
        Of the input's shape, values in ``[0, 1]``.
    weight
        Optional, broadcastable to the input's shape.
    size_average, reduce
        Deprecated; override ``reduction`` when given.
    reduction
        ``'none'`` | ``'mean'`` | ``'sum'``; ``'mean'`` is the plain mean of the
        weighted loss.

    Raises
    ------
    ValueError
        A target shape different from the input's, a weight that does not
        broadcast to it, or (eager arrays only) an input or target outside
        ``[0, 1]``.

    Notes
    -----
    Gradients are torch's, not the formula's own:
    :math:`\partial\ell/\partial x = w (x - y) / \max(x(1-x), 10^{-12})` and
    :math:`\partial\ell/\partial y = -w \operatorname{logit} x`, on torch and JAX
    alike, infinite slopes included (they differ from the clamped formula's own
    at and near 0 and 1).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(binary_cross_entropy(np.asarray([0.5, 0.8]), np.asarray([1.0, 1.0]))), 6)
    0.458145
    """
    func = "binary_cross_entropy"
    reduction = _reduction.resolve(reduction, size_average, reduce)
    xp, (input, target, weight) = _binary_operands(func, input, target, weight)
    loss = _registry.call("first", func, xp, input, target, weight, reduction=reduction)
    if loss is not NotImplemented:
        return loss
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Using a target size ({tuple(target.shape)}) that is different to the input "
            f"size ({tuple(input.shape)}) is deprecated. Please ensure they have the same size."
        )
    if weight is not None:
        _check_broadcasts_to(weight.shape, input.shape)
    if _outside_unit_interval(xp, input):
        raise ValueError("all elements of input should be between 0 and 1")
    if _outside_unit_interval(xp, target):
        raise ValueError("all elements of target should be between 0 and 1")

    def pointwise(x, y, *w):
        loss = _binary_cross_entropy_terms(xp, x, y)
        return loss * w[0] if w else loss

    operands = (input, target) if weight is None else (input, target, weight)
    return _blocked.reduce_blockwise(xp, pointwise, operands, reduction)


_registry.declare(
    Kernel("binary_cross_entropy_terms", "torch", "block", "torch:binary_cross_entropy_terms",
           "F.binary_cross_entropy, reduction 'none' (torch's own gradients)"),
    Kernel("binary_cross_entropy_with_logits_terms", "torch", "block",
           "torch:binary_cross_entropy_with_logits_terms",
           "F.binary_cross_entropy_with_logits, reduction 'none' (torch's own gradients)"),
)

#: torch's floor of ``x (1 - x)`` in the gradient of binary cross entropy: its ``EPSILON``,
#: 1e-12 held as a float32 (so 1e-12 rounded to float32, in float64 too).
_BCE_GRADIENT_FLOOR = 9.999999960041972e-13


def _binary_cross_entropy_terms(xp: ModuleType, x: Any, y: Any) -> Any:
    r"""The unweighted terms :math:`(y - 1) \max(\log(1 - x), -100) - y \max(\log x, -100)`,
    with torch's gradients rather than the formula's own.

    torch differentiates binary cross entropy by hand
    (``binary_cross_entropy_backward`` and ``binary_cross_entropy_target_backward``):

    .. math::

        \frac{\partial \ell}{\partial x} = \frac{x - y}{\max(x (1 - x), 10^{-12})},
        \qquad
        \frac{\partial \ell}{\partial y} = \log(1 - x) - \log x = -\operatorname{logit} x,

    which differ from the clamped formula's derivatives at and near 0 and 1 (the
    clamp zeroes the slope where :math:`\log x < -100`; next to 1 the true slope
    exceeds :math:`10^{12}`). Where autodiff may record (:func:`records_gradient`),
    the terms are the formula on values cut from the gradient plus
    the slopes above attached by :func:`~anyloss._ops.with_slope`, infinite ones
    (the target's at :math:`x \in \{0, 1\}`; in float16, where the floor rounds to
    0, the input's) included: torch's gradients on every library with autodiff. On
    torch the block is torch's own kernel (its value and its gradients, in one pass).
    """
    out = _registry.call("block", "binary_cross_entropy_terms", xp, x, y)
    if out is not NotImplemented:
        return out

    def terms(x, y):
        log_x = _ops.clamped_log(xp, x, _LOG_FLOOR)
        log_1mx = _ops.clamped_log1p(xp, -x, _LOG_FLOOR)
        # torch's kernel: (y - 1) max(log(1 - x), -100) - y max(log(x), -100)
        return (y - 1.0) * log_1mx - y * log_x

    input_records, target_records = records_gradient(x), records_gradient(y)
    if not (input_records or target_records):
        return terms(x, y)
    x_value, y_value = stop_gradient(x), stop_gradient(y)
    loss = terms(x_value, y_value)
    if input_records:
        floored = _ops.clamp_min(xp, x_value * (1.0 - x_value), _BCE_GRADIENT_FLOOR)
        # a finite slope (x, y in [0, 1]) except in 16-bit floats, where the floor is 0
        wide = x.dtype == xp.float32 or x.dtype == xp.float64
        loss = _ops.with_slope(xp, loss, x, (x_value - y_value) / floored, finite=wide)
    if target_records:
        loss = _ops.with_slope(xp, loss, y, xp.log1p(-x_value) - xp.log(x_value))
    return loss


@numpy_scalar_results
@kernels(
    Kernel("binary_cross_entropy_with_logits", "numpy", "first",
           "numpy.elementwise:binary_cross_entropy_with_logits", "one numba pass",
           "C-contiguous float32/64 of one shape; weight, pos_weight of that shape, (C,), "
           "per row or one value", needs="numba"),
)
def binary_cross_entropy_with_logits(
    input: Array,
    target: Array,
    weight: Array | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Array | None = None,
) -> Array:
    r"""Binary cross entropy of ``sigmoid(input)``, computed from the logits.

    With :math:`p` = ``pos_weight`` (1 when absent):

    .. math::

        \ell_n = w_n \left[ (1 - y_n)\, x_n
                 + \bigl(1 + (p - 1) y_n\bigr) \operatorname{softplus}(-x_n) \right]

    which equals :math:`-w_n [p\, y_n \log\sigma(x_n) + (1 - y_n)\log(1 - \sigma(x_n))]`
    and stays finite for logits of any size: :math:`\operatorname{softplus}(-x)
    = -\log\sigma(x)` is evaluated without overflow (torch's ``logsigmoid``
    kernel on torch arrays, ``min(x, 0) - log1p(exp(-|x|))`` elsewhere).

    Parameters
    ----------
    input
        Logits, any shape.
    target
        Of the input's shape, typically in ``[0, 1]``.
    weight
        Optional, broadcastable to the input's shape.
    size_average, reduce
        Deprecated; override ``reduction`` when given.
    reduction
        ``'none'`` | ``'mean'`` | ``'sum'``.
    pos_weight
        Optional weight of the positive term, broadcast against the target
        from the right: a ``(C,)`` array weighs each class of the last axis.

    Raises
    ------
    ValueError
        A target shape different from the input's, or a weight/pos_weight that
        does not broadcast to it.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(binary_cross_entropy_with_logits(np.asarray([0.0, 100.0]),
    ...                                              np.asarray([1.0, 1.0]))), 6)
    0.346574
    """
    func = "binary_cross_entropy_with_logits"
    reduction = _reduction.resolve(reduction, size_average, reduce)
    xp, (input, target, weight, pos_weight) = _binary_operands(
        func, input, target, weight, pos_weight
    )
    loss = _registry.call("first", func, xp, input, target, weight, pos_weight,
                          reduction=reduction)
    if loss is not NotImplemented:
        return loss
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(
            f"Target size ({tuple(target.shape)}) must be the same as input size "
            f"({tuple(input.shape)})"
        )
    out_shape = tuple(input.shape)
    if pos_weight is not None:
        out_shape = broadcast_shape(pos_weight.shape, target.shape)
    if weight is not None:
        out_shape = broadcast_shape(out_shape, weight.shape)
    if out_shape != tuple(input.shape):
        raise ValueError(
            f"output with shape {list(input.shape)} doesn't match the broadcast "
            f"shape {list(out_shape)}"
        )

    def terms(x, y, p):
        # torch's kernel: (1 - y) x - (1 + (p - 1) y) log_sigmoid(x), log_sigmoid(x) = -softplus(-x)
        log_sigmoid = _ops.log_sigmoid(xp, x)
        if p is not None:
            log_sigmoid = (1.0 + (p - 1.0) * y) * log_sigmoid
        return (1.0 - y) * x - log_sigmoid

    def pointwise(x, y, w, p):
        loss = _registry.call("block", "binary_cross_entropy_with_logits_terms", xp, x, y, p)
        if loss is not NotImplemented:
            return loss if w is None else loss * w
        if not records_gradient(x):
            loss = terms(x, y, p)
        else:
            # torch's backward, (p y + 1 - y) sigmoid(x) - p y (sigmoid(x) - y without p):
            # the formula's own, 1 - y - (1 + (p - 1) y) sigmoid(-x), cancels to 0 for x << 0
            x_value, y_value = stop_gradient(x), stop_gradient(y)
            sigmoid = 1.0 / (1.0 + xp.exp(-x_value))
            if p is None:
                slope = sigmoid - y_value
            else:
                py = stop_gradient(p) * y_value
                slope = (py + 1.0 - y_value) * sigmoid - py
            loss = _ops.with_slope(xp, terms(x_value, y, p), x, slope)  # inf at y = +-inf
        return loss if w is None else loss * w

    return _blocked.reduce_blockwise(xp, pointwise, (input, target, weight, pos_weight), reduction)


# --- multi-class helpers ---------------------------------------------------------------


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _torch_dtype_name(dtype: Any) -> str:
    name = str(dtype).rsplit(".", 1)[-1].strip("'>")
    return _TORCH_DTYPE_NAMES.get(name, name)


def _check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")


def _class_namespace(func: str, input: Any, target: Any, weight: Any | None) -> ModuleType:
    """The namespace of a class loss's arrays (``weight`` optional)."""
    return namespace(func, {"input": input, "target": target, "weight": weight},
                     optional=("weight",))


def _class_operands(func: str, input: Any, target: Any, weight: Any | None,
                    xp: ModuleType | None = None):
    """Namespace, and input/weight in one floating dtype, for class-index targets.

    The target must be an integer array; it is returned unchanged. ``xp``, when the
    caller has it already, is the arrays' namespace.
    """
    if xp is None:
        xp = _class_namespace(func, input, target, weight)
    float_dtype(func, xp, input)  # the input itself must be floating
    if not isdtype(xp, target.dtype, "integral"):
        raise TypeError(
            "expected target dtype to be Long or Byte, but got "
            f"{_torch_dtype_name(target.dtype)}"
        )
    if weight is None:
        return xp, input, target, None
    dtype = float_dtype(func, xp, input, weight)
    return xp, _as_dtype(xp, input, dtype), target, _as_dtype(xp, weight, dtype)


def _as_dtype(xp: ModuleType, x: Any, dtype: Any) -> Any:
    """``x`` in ``dtype``; the array itself (no copy) when it already has it."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _check_class_target(input: Any, target: Any, weight: Any | None) -> Any:
    """Check shapes as ``nll_loss`` does; returns the target (a ``(1,)`` one as 0-d)."""
    ndim = input.ndim
    if ndim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {ndim})")
    n_classes = input.shape[class_axis(input)]
    if ndim != 1:
        target_batch = target.shape[0] if target.ndim > 0 else 0
        if input.shape[0] != target_batch:
            raise ValueError(
                f"Expected input batch_size ({input.shape[0]}) to match target "
                f"batch_size ({target_batch})."
            )
    if ndim <= 2:
        if target.ndim > 1:
            raise ValueError("0D or 1D target tensor expected, multi-target not supported")
        if ndim == 1 and target.ndim == 1:
            if target.shape[0] != 1:
                raise ValueError(
                    "For 1D input, 1D target must have size 1, but got target size: "
                    f"{target.shape[0]}"
                )
            target = target[0]
        if weight is not None and (weight.ndim != 1 or weight.shape[0] != n_classes):
            raise ValueError(
                f"weight tensor should be defined either for all {n_classes} classes or "
                f"no classes but got weight tensor of shape: {list(weight.shape)}"
            )
        return target
    expected = (input.shape[0], *input.shape[2:])
    if ndim == 4:
        if target.ndim != 3:
            raise ValueError(
                "only batches of spatial targets supported (3D tensors) but got targets "
                f"of dimension: {target.ndim}"
            )
        if tuple(target.shape) != expected:
            raise ValueError(
                f"size mismatch (got input: {list(input.shape)} , target: "
                f"{list(target.shape)}"
            )
    elif tuple(target.shape) != expected:
        raise ValueError(f"Expected target size {list(expected)}, got {list(target.shape)}")
    if weight is not None and math.prod(weight.shape) != n_classes:
        raise ValueError("weight tensor should be defined either for all or no classes")
    return target


def _check_class_indices(xp: ModuleType, target: Any, n_classes: int, ignore_index: int) -> bool:
    """Check the values of an eager class-index ``target``; whether it is *plain*.

    Plain: every element is a class in ``[0, C)`` and none is ``ignore_index``,
    so that the loss needs no masks. Read from the minimum and the maximum (two
    reductions, one look at the host); only when they leave ``[0, C)`` are the
    elements themselves looked at, to raise torch's ``IndexError`` for the first
    one that is neither a class nor ignored. Lazy and empty targets are not
    inspected and answer False.
    """
    if not is_eager(target) or any(n == 0 for n in target.shape):
        return False
    low, high = extrema(xp, target)
    if 0 <= low and high < n_classes:
        return not low <= ignore_index <= high
    ignored, in_range = masks(xp, target, n_classes, ignore_index)
    invalid = xp.logical_not(ignored) & xp.logical_not(in_range)
    if any_true(xp, invalid):
        raise IndexError(f"Target {_first(xp, target, invalid)} is out of bounds.")
    return False


def _cross_entropy_kernels(func, input, target, weight, ignore_index, reduction,
                           label_smoothing):
    """``(result, operands)`` of a cross-entropy call (``func``) by the registry's kernels:
    ``label_smoothing`` checked, then the ``'first'`` kernel on the public arguments; if it
    declines, :func:`_cross_entropy_operands`' checks and the ``'checked'`` kernel on
    their operands. ``result`` is ``NotImplemented`` when neither answered; ``operands``
    are the checked ones for the written-once code (``None`` when the first stage
    answered)."""
    _check_label_smoothing(label_smoothing)
    xp = _class_namespace(func, input, target, weight)
    options = {"ignore_index": ignore_index, "reduction": reduction,
               "label_smoothing": label_smoothing}
    result = _registry.call("first", func, xp, input, target, weight, **options)
    if result is not NotImplemented:
        return result, None
    operands = _cross_entropy_operands(func, input, target, weight, ignore_index, xp)
    xp, input, target, weight = operands[:4]
    return _registry.call("checked", func, xp, input, target, weight, **options), operands


def _cross_entropy_operands(func, input, target, weight, ignore_index, xp=None):
    """Validated ``(xp, input, target, weight, probabilities, plain)`` of a cross-entropy call.

    The checks of :func:`cross_entropy` after ``label_smoothing``'s run here, before
    any fast path sees the arrays: shapes, dtypes and (on eager arrays) the class
    indices. ``plain`` is :func:`_check_class_indices`'s answer (False for
    probabilities); ``xp``, when the caller has it already, the arrays' namespace.
    """
    if _is_array(input) and _is_array(target) and tuple(input.shape) == tuple(target.shape):
        xp, input, target, weight = _probability_operands(input, target, weight, ignore_index,
                                                          xp)
        return xp, input, target, weight, True, False
    xp, input, target, weight = _class_operands(func, input, target, weight, xp)
    target = _check_class_target(input, target, weight)
    plain = _check_class_indices(xp, target, input.shape[class_axis(input)], ignore_index)
    return xp, input, target, weight, False, plain


def _class_index_grad(xp, input, target, weight, ignore_index, reduction, label_smoothing):
    """The gradient of the class-index cross entropy wrt the logits, in the array API.

    See :func:`cross_entropy_and_grad` for the formula. 16-bit inputs compute in float32.
    """
    dtype = input.dtype
    if needs_float32_accumulation(dtype):
        input = xp.astype(input, xp.float32)
        weight = None if weight is None else xp.astype(weight, xp.float32)
    axis = class_axis(input)
    n_classes = input.shape[axis]
    probs = xp.exp(_ops.log_softmax(xp, input, axis=axis))
    ignored, in_range = masks(xp, target, n_classes, ignore_index)
    usable = in_range & xp.logical_not(ignored)
    safe_target = xp.astype(xp.where(usable, target, xp.zeros_like(target)), indexing_dtype(xp))
    if weight is None:
        target_weight = xp.where(usable, 1.0, xp.zeros(target.shape, dtype=input.dtype))
        weight_total = float(n_classes)
    else:
        weight = xp.reshape(weight, (n_classes,))
        flat = xp.take(weight, xp.reshape(safe_target, (-1,)), axis=0)
        target_weight = xp.where(usable, xp.reshape(flat, target.shape), 0.0)
        weight_total = xp.sum(weight)
    if reduction == "mean":
        denominator = _reduction.total(xp, target_weight)
        no_weight = denominator == 0
        scale = xp.where(no_weight, math.nan, 1.0 / xp.where(no_weight, 1.0, denominator))
    else:
        scale = xp.ones((), dtype=input.dtype)
    coef = xp.where(usable, scale, 0.0)
    coef = xp.where(ignored | in_range, coef, math.nan)
    eps = label_smoothing
    along = along_class_axis  # reshapes a (C,) vector to broadcast along the class axis
    softmax_factor = coef * ((1.0 - eps) * target_weight + (eps / n_classes) * weight_total)
    one_hot = xpx.one_hot(safe_target, n_classes, dtype=input.dtype, axis=axis, xp=xp)
    hit = coef * (1.0 - eps) * target_weight
    grad = (xp.expand_dims(softmax_factor, axis=axis) * probs
            - xp.expand_dims(hit, axis=axis) * one_hot)
    if eps > 0:
        spread = xp.expand_dims(coef * (eps / n_classes), axis=axis)
        grad = grad - (spread if weight is None else spread * along(xp, weight, input))
    return xp.astype(grad, dtype)


def _probabilities_grad(xp, input, target, weight, reduction, label_smoothing):
    """The gradient of the probability-target cross entropy wrt the logits, in the array API."""
    dtype = input.dtype
    if needs_float32_accumulation(dtype):
        input, target = xp.astype(input, xp.float32), xp.astype(target, xp.float32)
        weight = None if weight is None else xp.astype(weight, xp.float32)
    axis = class_axis(input)
    n_classes = input.shape[axis]
    if label_smoothing > 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
    weighted = target if weight is None else target * along_class_axis(xp, weight, input)
    probs = xp.exp(_ops.log_softmax(xp, input, axis=axis))
    grad = xp.sum(weighted, axis=axis, keepdims=True) * probs - weighted
    if reduction == "mean":
        elements = math.prod(input.shape) // n_classes if n_classes else 0
        grad = grad / elements if elements else grad * math.nan
    return xp.astype(grad, dtype)


def _first(xp: ModuleType, target: Any, condition: Any) -> int:
    """The first element of an eager ``target`` where ``condition`` holds, as an int."""
    flat_condition = xp.reshape(xp.astype(condition, xp.int8), (-1,))
    position = int(xp.argmax(flat_condition))
    return int(xp.reshape(target, (-1,))[position])


def _probability_operands(input: Any, target: Any, weight: Any | None, ignore_index: int,
                          xp: ModuleType | None = None):
    """Checks of ``cross_entropy`` with class probabilities; ``(xp, input, target, weight)``
    in one floating dtype (``xp``, when the caller has it already, the namespace)."""
    func = "cross_entropy"
    if xp is None:
        xp = _class_namespace(func, input, target, weight)
    if not isdtype(xp, target.dtype, "real floating"):
        raise TypeError(
            "Expected floating point type for target with class probabilities, got "
            f"{_torch_dtype_name(target.dtype)}"
        )
    if ignore_index >= 0:
        raise ValueError("ignore_index is not supported for floating point target")
    if input.ndim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {input.ndim})")
    axis = class_axis(input)
    n_classes = input.shape[axis]
    if weight is not None and (weight.ndim != 1 or weight.shape[0] != n_classes):
        raise ValueError(
            f"cross_entropy: weight tensor should be defined either for all {n_classes} "
            f"classes or no classes but got weight tensor of shape: {list(weight.shape)}"
        )
    float_dtype(func, xp, input)  # the input itself must be floating
    arrays = [input, target] if weight is None else [input, target, weight]
    dtype = float_dtype(func, xp, *arrays)
    input, target = _as_dtype(xp, input, dtype), _as_dtype(xp, target, dtype)
    weight = None if weight is None else _as_dtype(xp, weight, dtype)
    return xp, input, target, weight


def _cross_entropy_probabilities(
    xp: ModuleType,
    input: Any,
    target: Any,
    weight: Any | None,
    reduction: str,
    label_smoothing: float,
) -> Any:
    """``cross_entropy`` for a floating target of class probabilities (input's shape),
    operands already checked and cast by :func:`_probability_operands`."""
    axis = class_axis(input)
    n_classes = input.shape[axis]
    if label_smoothing > 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / n_classes
    terms = _ops.log_softmax(xp, input, axis=class_axis(input)) * target
    if weight is not None:
        terms = terms * along_class_axis(xp, weight, input)
    loss = -xp.sum(terms, axis=axis)
    return _reduction.reduce(xp, loss, reduction)


# --- binary helpers -------------------------------------------------------------------


def _binary_operands(func: str, input: Any, target: Any, *optional: Any | None):
    """Namespace and the arrays (``None`` kept) in one floating dtype."""
    others = (target, *optional)
    names = ("weight", "pos_weight")
    named = {"input": input, "target": target, **dict(zip(names, optional, strict=False))}
    xp = namespace(func, named, optional=("weight", "pos_weight"))
    float_dtype(func, xp, input)  # the input itself must be floating
    present = [a for a in (input, *others) if a is not None]
    dtype = float_dtype(func, xp, *present)
    cast = [None if a is None else (a if a.dtype == dtype else xp.astype(a, dtype))
            for a in (input, *others)]
    return xp, cast


def _check_broadcasts_to(shape: tuple, target_shape: tuple) -> None:
    """``weight`` of binary_cross_entropy must broadcast to the target's shape."""
    shape, target_shape = tuple(shape), tuple(target_shape)
    if len(shape) > len(target_shape):
        full = broadcast_shape(shape, target_shape)
        raise ValueError(
            f"output with shape {list(target_shape)} doesn't match the broadcast "
            f"shape {list(full)}"
        )
    for i in range(1, len(shape) + 1):
        if shape[-i] != 1 and shape[-i] != target_shape[-i]:
            raise ValueError(
                f"Attempting to broadcast a dimension of length {shape[-i]} at -{i}! "
                f"Mismatching argument at index 1 had {shape}; but expected shape "
                f"should be broadcastable to {list(target_shape)}"
            )


def _outside_unit_interval(xp: ModuleType, x: Any) -> bool:
    """Whether an eager ``x`` has an element outside ``[0, 1]`` or a nan.

    From the minimum and the maximum, with no temporary (a nan makes both nan, and
    every comparison with it false). Lazy arrays are not looked at.
    """
    if not is_eager(x) or any(n == 0 for n in x.shape):
        return False
    low, high = extrema(xp, x)
    return not (low >= 0 and high <= 1)
