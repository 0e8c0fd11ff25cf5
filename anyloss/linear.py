r"""Cross entropy of a linear layer's output: ``linear_cross_entropy`` (torch 2.13).

.. math::

    \operatorname{linear\_cross\_entropy}(x, W, y)
        = \operatorname{cross\_entropy}(x W^\top + b,\ y)

For a language model's output layer the ``(N, C)`` logits are the largest
array of a training step (8 x 4096 tokens x a 256k vocabulary is 16.8 GB in
float16); the kernels of this loss never hold them whole. The written-once
formula here is the definition itself (a matmul, then :func:`cross_entropy`);
the NumPy kernel (:mod:`anyloss.backends.numpy.linear_cross_entropy`) computes
the logits a tile of rows and classes at a time (the gradients: a block of whole
rows) and reduces each while it is in memory; on JAX the blocks run under
``lax.map`` with a custom VJP that recomputes them, so that
``jax.jit(jax.grad(...))`` never holds the logits either; torch's own
``linear_cross_entropy`` serves torch tensors.

Shapes (``D`` input features, ``C`` classes):

- ``input`` ``(N, D)`` or unbatched ``(D,)``;
- ``linear_weight`` ``(C, D)``, or ``(C, d1, ..., dK, D)`` for a K-dimensional
  loss (batched input only), whose logits are ``(N, C, d1, ..., dK)``;
- ``linear_bias`` ``(C, d1, ..., dK)`` or ``None``;
- ``target``: class indices of the logits' shape without the class axis, or
  class probabilities of the logits' shape.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from anyloss import _registry
from anyloss._array import Array, float_dtype, isdtype, namespace, numpy_scalar_results
from anyloss._reduction import resolve
from anyloss._registry import Kernel, kernels
from anyloss._validate import shape_for_message, warn
from anyloss.classification import (
    _check_class_indices,
    _check_class_target,
    _check_label_smoothing,
    _torch_dtype_name,
    cross_entropy,
    cross_entropy_and_grad,
)

__all__ = ["linear_cross_entropy", "linear_cross_entropy_and_grad", "LinearCrossEntropyOptions"]

_ACC_POLICIES = ("auto", "accurate", "balanced", "compact")
_ACC_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """The options of the chunked path, as ``torch.nn.LinearCrossEntropyOptions`` has
    them, without torch.

    Passing ``options`` (this class or torch's own) asks for the chunked
    evaluation; the value is the same as without it (within rounding).

    Attributes
    ----------
    batch_chunk_size
        Rows per chunk (``None``: chosen by ``chunking_method``). torch: its
        chunked op's chunk. NumPy: the rows of the logits block the kernel holds
        (it always holds blocks; without options it picks its own size).
        Elsewhere: not used (the generic path materialises the logits).
    chunking_method
        ``'auto'``, ``'aspect_ratio'`` or ``'aspect_ratio:K'``, torch's rule
        for the chunk when ``batch_chunk_size`` is ``None``: chunks whose logits
        take the memory of the input (divided by K). On NumPy ``'auto'`` means
        the kernel's own block size.
    acc_policy, acc_dtype
        torch's precision policy and accumulation dtype (a dtype name such as
        ``'float32'``, or a library dtype); passed on to torch. The NumPy kernel
        accumulates its sums in float64 whatever they say.
    allow_retain_graph
        torch: allow a second ``backward()`` through the chunked op.

    Raises
    ------
    ValueError
        torch's messages, for an unknown ``acc_policy`` or ``chunking_method``,
        a ``batch_chunk_size`` that is not a positive int, or an unknown
        ``acc_dtype``.
    """

    allow_retain_graph: bool = False
    batch_chunk_size: int | None = None
    chunking_method: str | None = "auto"
    acc_policy: str = "auto"
    acc_dtype: Any = None

    def __post_init__(self) -> None:
        if self.acc_policy not in _ACC_POLICIES:
            raise ValueError(f"invalid acc_policy: {self.acc_policy!r}")
        if self.chunking_method is not None and self.chunking_method != "auto":
            name, sep, factor = self.chunking_method.partition(":")
            factor = factor if sep else "1"
            if not (name == "aspect_ratio" and factor.isdigit() and int(factor) > 0):
                raise ValueError(f"invalid chunking_method: {self.chunking_method!r}")
        size = self.batch_chunk_size
        if not (size is None or (isinstance(size, int) and not isinstance(size, bool)
                                 and size > 0)):
            raise ValueError(f"batch_chunk_size must be positive int or None, got {size!r}")
        if self.acc_dtype is not None and _dtype_name(self.acc_dtype) not in _ACC_DTYPES:
            raise ValueError(
                "acc_dtype must be one of {None, float16, bfloat16, float32, float64}, got "
                f"{self.acc_dtype!r}. Pass acc_dtype=None to let the op pick automatically.")

    def rows_per_chunk(self, n_rows: int, in_features: int, n_classes: int) -> int | None:
        """The chunk's rows for a problem of that size, by torch's rule, or ``None`` for
        "the kernel's own choice" (``chunking_method='auto'`` without a chunk size).

        ``aspect_ratio:K``: ``next_pow2(ceil(N / ceil(C / D))) / K`` rows, whose
        logits take the input's memory divided by K.

        >>> LinearCrossEntropyOptions(chunking_method="aspect_ratio").rows_per_chunk(
        ...     4096, 1024, 32000)
        128
        """
        method = self.chunking_method
        if method == "auto" and self.batch_chunk_size is not None:
            method = None
        if method is None:
            size = n_rows if self.batch_chunk_size is None else self.batch_chunk_size
            return max(1, min(size, n_rows))
        if method == "auto":
            return None
        _, sep, factor = method.partition(":")
        ratio = math.ceil(n_classes / max(in_features, 1))
        rows = max(1, math.ceil(n_rows / max(ratio, 1)))
        rows = 1 << (rows - 1).bit_length()  # the next power of two
        rows = max(1, rows // int(factor if sep else "1"))
        if self.batch_chunk_size is not None and self.batch_chunk_size != rows:
            raise ValueError(
                f"batch_chunk_size (={self.batch_chunk_size}) and chunking_method "
                f"('{method}') give different chunk sizes ({self.batch_chunk_size} vs "
                f"{rows}); pass only one.")
        return min(rows, n_rows)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1].strip("'>")


@dataclasses.dataclass(frozen=True)
class _Problem:
    """A validated call: the logits' shape, the kind of target, and the options."""

    xp: Any
    logits_shape: tuple[int, ...]
    out_features: tuple[int, ...]
    probabilities: bool
    ignore_index: int
    chunked: bool  # options given and supported: the chunked evaluation was asked for


def _check(func: str, input: Array, linear_weight: Array, target: Array,
           linear_bias: Array | None, weight: Array | None, reduction: str,
           ignore_index: int | None, label_smoothing: float, options: Any) -> _Problem:
    """torch's checks of ``linear_cross_entropy`` (its ``RuntimeError``s as ``ValueError``s)
    and warning; those of ``cross_entropy`` follow in the call of it."""
    xp = namespace(func, {"input": input, "linear_weight": linear_weight, "target": target,
                          "linear_bias": linear_bias, "weight": weight},
                   optional=("linear_bias", "weight"))
    if input.ndim < 1 or input.ndim > 2:
        raise ValueError(f"expected input with dimensionality 1 or 2, got {input.ndim}")
    if linear_weight.ndim < 2:
        raise ValueError("expected linear_weight with dimensionality at least 2, got "
                         f"{linear_weight.ndim}")
    batch = tuple(input.shape[:-1])
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise ValueError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {in_features} and {linear_weight.shape[-1]}, respectively")
    n_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (n_classes, *out_features):
        raise ValueError(f"expected linear_bias shape {(n_classes, *out_features)}, got "
                         f"{tuple(linear_bias.shape)}")
    if out_features and not batch:
        raise ValueError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} "
            f"requires batched input, (N, {in_features}), got unbatched input with shape "
            f"{tuple(input.shape)}")
    logits_shape = (*batch, n_classes, *out_features)
    probabilities = tuple(target.shape) == logits_shape
    if probabilities and ignore_index is not None:
        raise ValueError("ignore_index cannot be specified when target contains probabilities")
    chunked = False
    if options is not None:
        integer_target = xp.isdtype(target.dtype, "integral")
        supported = (reduction in ("mean", "sum", "none") and label_smoothing == 0.0
                     and integer_target and not out_features)
        if not supported:
            bias_shape = None if linear_bias is None else shape_for_message(linear_bias)
            warn(
                "linear_cross_entropy: ``options`` ignored; chunked path needs reduction in "
                "{'mean','sum','none'}, label_smoothing == 0, target.dtype == int64, "
                "out_features == (). Got reduction=%r, label_smoothing=%s, "
                "target.dtype=%s, out_features=%s, linear_bias.shape=%s.",
                reduction, label_smoothing, target.dtype, shape_for_message(linear_weight)[1:-1],
                bias_shape, stacklevel=3)
        chunked = supported
    return _Problem(xp, logits_shape, out_features, probabilities,
                    -100 if ignore_index is None else ignore_index, chunked)


def _logits(xp: Any, input: Array, linear_weight: Array, linear_bias: Array | None,
            logits_shape: tuple[int, ...]) -> Array:
    """``input @ W.T + b`` in the logits' shape (the written-once path holds them whole)."""
    d = input.shape[-1]
    flat = xp.reshape(linear_weight, (math.prod(linear_weight.shape[:-1]), d))
    logits = xp.matmul(input, xp.matrix_transpose(flat))
    if linear_bias is not None:
        logits = logits + xp.reshape(linear_bias, (-1,))
    return xp.reshape(logits, logits_shape)


@numpy_scalar_results
@kernels(
    Kernel("linear_cross_entropy", "torch", "checked", "torch:linear_cross_entropy",
           "CPU float32/64 without options: the NumPy kernel (with autograd on "
           "the weight and a 'mean' or 'sum' reduction, as the custom op "
           "anyloss::linear_cross_entropy_fused, which computes the gradients in the "
           "forward's pass); F.linear_cross_entropy otherwise (chunked with options)",
           "class indices"),
    Kernel("linear_cross_entropy", "jax", "checked", "jax:linear_cross_entropy",
           "row blocks under lax.map; custom VJP recomputing each block's logits",
           "(C, D) weight; class indices"),
    Kernel("linear_cross_entropy", "numpy", "checked",
           "numpy.linear_cross_entropy:linear_cross_entropy",
           "tiles of rows and classes of logits by BLAS, each reduced by the cross-entropy "
           "pass, combined over the classes by a running maximum and sum",
           "float32/64 (N, D) or (D,) input; (C, D) weight; class indices"),
    Kernel("linear_cross_entropy", "dask", "checked", "dask:linear_cross_entropy",
           "the NumPy kernel per row chunk, the weight one shared chunk",
           "(N, D) input; (C, D) weight; class indices; known chunks"),
)
def linear_cross_entropy(
    input: Array,
    linear_weight: Array,
    target: Array,
    *,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
) -> Array:
    r"""Cross entropy of the logits ``input @ linear_weight.T + linear_bias``, as
    ``torch.nn.functional.linear_cross_entropy``.

    Equal to ``cross_entropy(linear(input, W, b), target, weight=weight,
    reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)``
    (see :func:`cross_entropy` for the formula), with ``ignore_index=None``
    meaning -100 for class indices and refused for class probabilities.

    Parameters
    ----------
    input
        ``(N, D)`` or ``(D,)``.
    linear_weight
        ``(C, D)``, or ``(C, d1, ..., dK, D)`` for K-dimensional logits.
    target
        Class indices ``(N,)``, ``()`` or ``(N, d1, ..., dK)``, or class
        probabilities of the logits' shape.
    linear_bias
        ``(C, d1, ..., dK)`` or ``None``.
    weight, reduction, label_smoothing
        As in :func:`cross_entropy`.
    ignore_index
        A class index to skip; ``None`` is -100 (and the only value allowed with
        probability targets).
    options
        :class:`LinearCrossEntropyOptions` (or torch's own): evaluate in chunks
        of rows. Only with ``reduction`` in ``'mean'``, ``'sum'``, ``'none'``,
        ``label_smoothing == 0``, class indices and 2-d ``linear_weight``; any
        other call warns (torch's warning) and ignores them.

    Raises
    ------
    ValueError
        torch's checks (input of 1 or 2 dimensions, matching features, bias
        shape, batched input for K-dimensional logits, ``ignore_index`` with
        probabilities) and :func:`cross_entropy`'s.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.asarray([[1.0, 0.0], [0.0, 1.0]])
    >>> w = np.asarray([[2.0, 0.0], [0.0, 0.0]])
    >>> round(float(linear_cross_entropy(x, w, np.asarray([0, 1]))), 6)
    0.410038
    """
    func = "linear_cross_entropy"
    p = _check(func, input, linear_weight, target, linear_bias, weight, reduction,
               ignore_index, label_smoothing, options)
    loss = _kernel_answer(func, p, input, linear_weight, target, linear_bias, weight,
                          reduction, label_smoothing, options)
    if loss is not NotImplemented:
        return loss
    logits = _logits(p.xp, input, linear_weight, linear_bias, p.logits_shape)
    return cross_entropy(logits, target, weight, ignore_index=p.ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing)


@dataclasses.dataclass(frozen=True)
class _Shape:
    """The logits' shape, for :func:`cross_entropy`'s shape checks before any logit exists."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _kernel_may_take(func: str, p: _Problem, input: Array, linear_weight: Array,
                     target: Array, linear_bias: Array | None, weight: Array | None,
                     reduction: str, label_smoothing: float) -> bool:
    """Run :func:`cross_entropy`'s checks on the logits-to-be; whether a kernel may see the
    call (class indices; probabilities take the written-once path, whose
    :func:`cross_entropy` checks them).

    The kernels receive checked arguments: options, dtypes, the target's shape
    against the logits' and (on eager arrays) its class indices.
    """
    resolve(reduction)
    _check_label_smoothing(label_smoothing)
    if p.probabilities:
        return False
    floats = [a for a in (input, linear_weight, linear_bias, weight) if a is not None]
    float_dtype(func, p.xp, *floats)
    if not isdtype(p.xp, target.dtype, "integral"):
        raise TypeError("expected target dtype to be Long or Byte, but got "
                        f"{_torch_dtype_name(target.dtype)}")
    _check_class_target(_Shape(p.logits_shape), target, weight)
    _check_class_indices(p.xp, target, linear_weight.shape[0], p.ignore_index)
    return True


def _kernel_answer(func: str, p: _Problem, input: Array, linear_weight: Array,
                   target: Array, linear_bias: Array | None, weight: Array | None,
                   reduction: str, label_smoothing: float, options: Any) -> Any:
    """The registry kernel's answer for a checked call of ``func``, or ``NotImplemented``
    (no kernel, a decline, or probability targets: the written-once path's)."""
    if not _kernel_may_take(func, p, input, linear_weight, target, linear_bias, weight,
                            reduction, label_smoothing):
        return NotImplemented
    return _registry.call("checked", func, p.xp, input, linear_weight, target,
                          linear_bias=linear_bias, weight=weight, reduction=reduction,
                          ignore_index=p.ignore_index, label_smoothing=label_smoothing,
                          options=options if p.chunked else None)


@numpy_scalar_results
@kernels(
    Kernel("linear_cross_entropy_and_grad", "torch", "checked",
           "torch:linear_cross_entropy_and_grad",
           "autograd through the torch linear_cross_entropy kernel (the fused custom op on "
           "CPU)", "class indices"),
    Kernel("linear_cross_entropy_and_grad", "jax", "checked",
           "jax:linear_cross_entropy_and_grad", "jax.vjp of the row blocks",
           "(C, D) weight; class indices"),
    Kernel("linear_cross_entropy_and_grad", "numpy", "checked",
           "numpy.linear_cross_entropy:linear_cross_entropy_and_grad",
           "row blocks: logits by BLAS, the pass's gradient written over them, two BLAS products",
           "float32/64 (N, D) or (D,) input; (C, D) weight; class indices"),
    Kernel("linear_cross_entropy_and_grad", "dask", "checked",
           "dask:linear_cross_entropy_and_grad",
           "the NumPy kernel per row chunk; partial weight gradients summed by a tree",
           "(N, D) input; (C, D) weight; class indices; known chunks"),
)
def linear_cross_entropy_and_grad(
    input: Array,
    linear_weight: Array,
    target: Array,
    *,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
) -> tuple[Array, Array, Array, Array | None]:
    r"""``linear_cross_entropy`` and its gradients, for libraries without autodiff.

    Takes :func:`linear_cross_entropy`'s arguments and returns ``(loss,
    grad_input, grad_weight, grad_bias)``: the loss as
    :func:`linear_cross_entropy` returns it, and the gradients of it (of the
    losses' sum for ``reduction='none'``) with respect to ``input``,
    ``linear_weight`` and ``linear_bias`` (``None`` without a bias), equal to
    torch autograd's. With :math:`G` the gradient with respect to the logits
    (:func:`cross_entropy_and_grad`):

    .. math::

        \nabla_x = G W, \qquad \nabla_W = G^\top x, \qquad \nabla_b = \textstyle\sum_n G_n

    NumPy computes them a block of rows at a time (the block's logits, then its
    :math:`G`, then the two products), never holding the ``(N, C)`` logits;
    other libraries (or fast paths off) evaluate the formulas above whole.

    >>> import numpy as np
    >>> x, w = np.asarray([[0.0, 1.0]]), np.asarray([[1.0, 0.0], [0.0, 0.0]])
    >>> loss, gx, gw, gb = linear_cross_entropy_and_grad(x, w, np.asarray([1]))
    >>> gw
    array([[ 0. ,  0.5],
           [ 0. , -0.5]])
    """
    func = "linear_cross_entropy_and_grad"
    p = _check(func, input, linear_weight, target, linear_bias, weight, reduction,
               ignore_index, label_smoothing, options)
    result = _kernel_answer(func, p, input, linear_weight, target, linear_bias, weight,
                            reduction, label_smoothing, options)
    if result is not NotImplemented:
        return result
    xp = p.xp
    logits = _logits(xp, input, linear_weight, linear_bias, p.logits_shape)
    loss, grad_logits = cross_entropy_and_grad(
        logits, target, weight, ignore_index=p.ignore_index, reduction=reduction,
        label_smoothing=label_smoothing)
    d = input.shape[-1]
    flat_weight = xp.reshape(linear_weight, (math.prod(linear_weight.shape[:-1]), d))
    grad = xp.reshape(grad_logits, (*input.shape[:-1], flat_weight.shape[0]))
    grad_input = xp.matmul(grad, flat_weight)
    rows = grad if grad.ndim == 2 else grad[None, :]
    x_rows = input if input.ndim == 2 else input[None, :]
    grad_weight = xp.reshape(xp.matmul(xp.matrix_transpose(rows), x_rows),
                             tuple(linear_weight.shape))
    grad_bias = None
    if linear_bias is not None:
        grad_bias = xp.reshape(xp.sum(rows, axis=0), tuple(linear_bias.shape))
    return loss, grad_input, grad_weight, grad_bias
