"""Connectionist temporal classification: ``ctc_loss`` and ``ctc_loss_and_grad``.

The loss is the negative log-likelihood of a target label sequence under all
alignments of the frames to it, computed with the forward ("alpha") recursion
of Graves, Fernández, Gomez and Schmidhuber, *Connectionist Temporal
Classification: Labelling Unsegmented Sequence Data with Recurrent Neural
Networks*, ICML 2006, section 4.1. The target ``l`` (length ``U``) is extended
with blanks to ``l' = (blank, l_1, blank, l_2, ..., l_U, blank)`` of ``2U + 1``
states; a path may stay in a state, move one state on, or skip a blank between
two *different* labels. In log space::

    alpha_t(s) = log_probs[t, l'_s]
                 + logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1),
                             alpha_{t-1}(s-2) if l'_s != blank and l'_s != l'_{s-2})
    loss = -logsumexp(alpha_{T'-1}(2U), alpha_{T'-1}(2U - 1))

with ``T'`` the sample's input length. The generic formula below is written in
the array API, vectorized over the batch and the ``2S + 1`` states, with one
Python loop over time. Fast paths (see :mod:`anyloss._registry`) call
``torch.nn.functional.ctc_loss``, a ``lax.scan`` on JAX, a compiled or
vectorized NumPy kernel, and that kernel over the batch chunks of a Dask array.

Gradients follow torch's convention, on every path: the gradient with respect
to ``log_probs[t, n, c]`` (for ``t`` below the input length) is::

    exp(log_probs[t, n, c])
        - sum_{s: l'_s = c} exp(alpha_t(s) + beta_t(s) - log_probs[t, n, c] + loss_n)

which is the gradient with respect to the *logits* when ``log_probs`` is their
``log_softmax`` (the way every CTC model is trained), and differs from the
partial derivative with respect to ``log_probs`` alone by ``exp(log_probs)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from anyloss import _ctc_recursion, _reduction, _registry
from anyloss._array import (
    Array,
    device,
    float_dtype,
    is_eager,
    isdtype,
    library_name,
    namespace,
    needs_float32_accumulation,
    numpy_scalar_results,
)
from anyloss._registry import Kernel, kernels
from anyloss._validate import any_true, extrema

__all__ = ["ctc_loss", "ctc_loss_and_grad"]

_ALLOCATE = "(while checking arguments for ctc_loss_allocate_outputs)"

#: Libraries whose autodiff sees the generic losses: they carry torch's gradient convention.
_AUTODIFF_LIBRARIES = ("torch", "jax")


@dataclass(frozen=True)
class _Call:
    """A validated call, in batched form: log_probs (T, N, C), lengths (N,)."""

    xp: ModuleType
    log_probs: Any
    targets: Any  # (N, S) padded or (sum(target_lengths),) concatenated
    input_lengths: Any
    target_lengths: Any
    blank: int
    reduction: str
    zero_infinity: bool
    unbatched: bool
    dtype: Any  # the dtype of the result
    max_target_length: int  # S of the padded form the generic path builds


@numpy_scalar_results
@kernels(
    Kernel("ctc_loss", "torch", "checked", "torch:ctc_loss",
           "CPU float32/64: the NumPy kernel as the custom op anyloss::ctc_loss (autograd, "
           "torch.compile); F.ctc_loss otherwise", needs="numba", without="F.ctc_loss"),
    Kernel("ctc_loss", "jax", "checked", "jax:ctc_loss", "lax.scan over the frames"),
    Kernel("ctc_loss", "numpy", "checked", "numpy.ctc:ctc_loss",
           "numba, rescaled probability space (log space where it could lose digits)",
           needs="numba", without="log space vectorised over batch and states"),
    Kernel("ctc_loss", "dask", "checked", "dask:ctc_loss", "the NumPy kernel per batch chunk"),
)
def ctc_loss(
    log_probs: Array,
    targets: Array,
    input_lengths: Array,
    target_lengths: Array,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Array:
    """The connectionist temporal classification loss, as ``torch.nn.functional.ctc_loss``.

    Parameters
    ----------
    log_probs
        ``(T, N, C)``, or ``(T, C)`` unbatched: log-probabilities of the ``C``
        classes (blank included) at each of ``T`` frames, e.g. a ``log_softmax``.
    targets
        Integer labels, padded ``(N, S)`` with ``S >= max(target_lengths)``, or
        the ``N`` targets concatenated into one 1-d array of length
        ``sum(target_lengths)``.
    input_lengths, target_lengths
        ``(N,)`` integer arrays (of ``log_probs``'s library), lists or tuples of
        ints: the frames and labels of each sample. Input lengths are at most ``T``.
    blank
        The blank class, in ``[0, C)``.
    reduction
        ``'none'``: the ``(N,)`` losses; ``'sum'``; ``'mean'``: each loss
        divided by ``max(target_length, 1)``, then averaged over the batch.
    zero_infinity
        Give impossible alignments (an input too short for its target) a loss
        of 0 and a zero gradient instead of ``inf``.

    Returns
    -------
    An array of ``log_probs``'s library and floating dtype.

    A zero-length target costs ``-sum_t log_probs[t, blank]``; a zero-length
    input costs 0 for an empty target and ``inf`` otherwise.

    Two frames of two equally likely classes, one label: three of the four paths
    (``1 1``, ``1 blank``, ``blank 1``) collapse to it, a loss of ``-log(3/4)``.

    >>> import numpy as np
    >>> lp = np.log(np.full((2, 1, 2), 0.5))
    >>> round(float(ctc_loss(lp, np.asarray([[1]]), [2], [1], reduction='sum')), 12)
    0.287682072452
    """
    call = _prepare("ctc_loss", log_probs, targets, input_lengths, target_lengths,
                    blank, reduction, zero_infinity)
    losses = _registry.call(
        "checked", "ctc_loss", call.xp, *_work_arrays(call), blank=call.blank,
        zero_infinity=call.zero_infinity, max_target_length=call.max_target_length,
    )
    if losses is NotImplemented:
        losses = _ctc_recursion.losses(
            call.xp, _work_arrays(call)[0], call.targets, call.input_lengths,
            call.target_lengths, call.max_target_length, call.blank, call.zero_infinity,
            torch_gradient=library_name(call.xp) in _AUTODIFF_LIBRARIES)
    return _reduce(call, losses)


@numpy_scalar_results
@kernels(
    Kernel("ctc_loss_and_grad", "torch", "checked", "torch:ctc_loss_and_grad",
           "CPU float32/64: the NumPy kernel (anyloss::ctc_loss_fused); F.ctc_loss and "
           "autograd otherwise", needs="numba", without="F.ctc_loss and autograd"),
    Kernel("ctc_loss_and_grad", "jax", "checked", "jax:ctc_loss_and_grad",
           "jax.vjp of the scan"),
    Kernel("ctc_loss_and_grad", "numpy", "checked", "numpy.ctc:ctc_loss_and_grad",
           "numba alpha-beta in rescaled probability space, one sample per thread",
           needs="numba"),
    Kernel("ctc_loss_and_grad", "dask", "checked", "dask:ctc_loss_and_grad",
           "the NumPy kernel per batch chunk"),
)
def ctc_loss_and_grad(
    log_probs: Array,
    targets: Array,
    input_lengths: Array,
    target_lengths: Array,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> tuple[Array, Array]:
    """``ctc_loss`` and its gradient with respect to ``log_probs``, for libraries without autodiff.

    Takes exactly :func:`ctc_loss`'s arguments and returns ``(loss, grad)``:
    ``loss`` as :func:`ctc_loss` returns it and ``grad`` of ``log_probs``'s
    shape and dtype, equal to what torch autograd gives for
    ``torch.nn.functional.ctc_loss`` (torch's convention, see the module
    docstring): computed with the alpha-beta recursion of Graves et al. (2006),
    zero past each input length, scaled by the reduction (``1 / (N *
    max(target_length, 1))`` for ``'mean'``) and zero for the infinite losses
    that ``zero_infinity`` zeroes. For ``reduction='none'``, ``grad[:, n]`` is
    the gradient of ``loss[n]`` (each sample only reaches its own slice).

    NumPy (and Dask, chunk by chunk) use the alpha-beta kernel of
    :mod:`anyloss.backends.numpy`; torch and JAX differentiate their own fast
    path with their autodiff; other libraries (array-api-strict, CuPy, or any
    library with fast paths switched off) run the alpha-beta recursion written
    in the array API.
    """
    call = _prepare("ctc_loss_and_grad", log_probs, targets, input_lengths, target_lengths,
                    blank, reduction, zero_infinity)
    result = _registry.call(
        "checked", "ctc_loss_and_grad", call.xp, *_work_arrays(call), blank=call.blank,
        zero_infinity=call.zero_infinity, max_target_length=call.max_target_length,
    )
    if result is NotImplemented:
        result = _ctc_recursion.losses_and_grad(
            call.xp, _work_arrays(call)[0], call.targets, call.input_lengths,
            call.target_lengths, call.max_target_length, call.blank, call.zero_infinity)
    losses, grad = result
    xp = call.xp
    if call.reduction == "mean":
        n = call.log_probs.shape[1]
        scale = 1.0 / (n * xp.astype(_at_least_one(xp, call.target_lengths), losses.dtype))
        grad = grad * scale[None, :, None]
    grad = xp.astype(grad, call.dtype)
    if call.unbatched:
        grad = grad[:, 0, :]
    return _reduce(call, losses), grad


# --- validation and normalisation -------------------------------------------------------


def _prepare(func, log_probs, targets, input_lengths, target_lengths, blank, reduction,
             zero_infinity) -> _Call:
    reduction = _reduction.resolve(reduction)
    arrays = {"log_probs": log_probs, "targets": targets}
    for name, value in (("input_lengths", input_lengths), ("target_lengths", target_lengths)):
        if not isinstance(value, (list, tuple)):
            arrays[name] = value
    xp = namespace(func, arrays)
    dtype = float_dtype(func, xp, log_probs)

    if log_probs.ndim not in (2, 3):
        raise ValueError(
            f"Expected 3-dimensional tensor, but got {log_probs.ndim}-dimensional tensor "
            f"for argument #1 'log_probs' {_ALLOCATE}"
        )
    if any(n == 0 for n in log_probs.shape):
        raise ValueError("log_probs tensor must not be empty")
    if isinstance(blank, bool) or not isinstance(blank, int):
        raise TypeError(f"{func}(): argument 'blank' must be int, not {type(blank).__name__}")
    n_classes = log_probs.shape[-1]
    if not 0 <= blank < n_classes:
        raise ValueError("blank must be in label range")
    if not isdtype(xp, targets.dtype, "integral"):
        raise TypeError(f"{func}(): targets must be integral, got {targets.dtype}")

    unbatched = log_probs.ndim == 2
    if unbatched:
        log_probs = log_probs[:, None, :]
        if targets.ndim == 1:
            targets = targets[None, :]
    if targets.ndim not in (1, 2):
        raise ValueError(
            f"Expected 1 to 2 dimensions, but got {targets.ndim}-dimensional tensor "
            f"for argument #2 'targets' {_ALLOCATE}"
        )
    n_frames, batch = log_probs.shape[0], log_probs.shape[1]
    il = _lengths(xp, func, "input_lengths", input_lengths, batch, log_probs)
    tl = _lengths(xp, func, "target_lengths", target_lengths, batch, log_probs)
    if targets.ndim == 2 and targets.shape[0] != batch:
        raise ValueError(
            f"Expected tensor to have size {batch} at dimension 0, but got size "
            f"{targets.shape[0]} for argument #2 'targets' {_ALLOCATE}"
        )
    eager = is_eager(il) and is_eager(tl)
    if eager:
        _check_length_values(xp, il, tl, n_frames)
    max_target = _max_target_length(xp, targets, tl, eager)
    if eager and is_eager(targets):
        _check_labels(xp, targets, tl, max_target, n_classes, blank)
    if targets.ndim == 2 and targets.shape[1] > max_target:
        targets = targets[:, :max_target]
    return _Call(xp, log_probs, targets, il, tl, blank, reduction, bool(zero_infinity),
                 unbatched, dtype, max_target)


def _lengths(xp, func, name, value, batch, like) -> Any:
    """``value`` as a 1-d integer array of ``xp`` with ``batch`` elements."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{func}(): {name} must be integral: an array, list or tuple of ints")
        default_int = xp.asarray(0).dtype
        value = xp.asarray(list(value), dtype=default_int, device=device(like))
    elif not isdtype(xp, value.dtype, "integral"):
        raise ValueError(f"{name} must be integral")
    if math.prod(value.shape) != batch:
        raise ValueError(f"{name} must be of size batch_size")
    return xp.reshape(value, (batch,))


def _check_length_values(xp, il, tl, n_frames) -> None:
    for name, lengths, upper in (("input_lengths", il, n_frames), ("target_lengths", tl, None)):
        if lengths.shape[0] == 0:
            continue
        low, high = extrema(xp, lengths)
        if low < 0:
            raise ValueError(
                f"Expected {name} to have value at least 0, but got value {low} {_ALLOCATE}"
            )
        if upper is not None and high > upper:
            raise ValueError(
                f"Expected {name} to have value at most {upper}, but got value {high} {_ALLOCATE}"
            )


def _max_target_length(xp, targets, tl, eager) -> int:
    """S of the padded form: the longest target (padding beyond it is never read)."""
    if targets.ndim == 2:
        longest = int(xp.max(tl)) if eager and tl.shape[0] else 0
        if eager and longest > targets.shape[1]:
            raise ValueError(
                f"Expected tensor to have size at least {longest} at dimension 1, but got "
                f"size {targets.shape[1]} for argument #2 'targets' {_ALLOCATE}"
            )
        return min(longest, targets.shape[1]) if eager else targets.shape[1]
    if eager:
        total = int(xp.sum(tl))
        if total != targets.shape[0]:
            raise ValueError(
                f"Expected tensor to have size {total} at dimension 0, but got size "
                f"{targets.shape[0]} for argument #2 'targets' {_ALLOCATE}"
            )
        return int(xp.max(tl)) if tl.shape[0] else 0
    size = targets.shape[0]
    return size if size is not None and size == size else 0


def _at_least_one(xp, lengths) -> Any:
    """``max(lengths, 1)``, the divisor of the 'mean' reduction (a ``where``: array-api-compat's
    ``maximum`` with a scalar calls ``torch.result_type``, which torch.compile cannot trace)."""
    return xp.where(lengths > 1, lengths, 1)


def _check_labels(xp, targets, tl, max_target, n_classes, blank) -> None:
    """IndexError for a label outside [0, C) among the first target_length labels."""
    padded = _ctc_recursion.padded_targets(xp, targets, tl, max_target, blank)
    if padded.shape[1] == 0:
        return
    too_high = padded >= n_classes
    if any_true(xp, too_high | (padded < 0)):
        label = int(xp.max(padded)) if any_true(xp, too_high) else int(xp.min(padded))
        raise IndexError(f"Target {label} is out of bounds.")


def _work_arrays(call: _Call) -> tuple[Any, Any, Any, Any]:
    """The arrays a backend receives; 16-bit floats are raised to float32."""
    lp = call.log_probs
    if needs_float32_accumulation(lp.dtype):
        lp = call.xp.astype(lp, call.xp.float32)
    return lp, call.targets, call.input_lengths, call.target_lengths


def _reduce(call: _Call, losses: Any) -> Any:
    xp = call.xp
    losses = xp.astype(losses, call.dtype) if losses.dtype != call.dtype else losses
    if call.reduction == "mean":
        losses = losses / xp.astype(_at_least_one(xp, call.target_lengths), losses.dtype)
    if call.unbatched and call.reduction == "none":
        return losses[0]
    return _reduction.reduce(xp, losses, call.reduction)
