"""anyloss's NumPy kernels as torch custom operators, for CPU tensors.

A float32/float64 CPU tensor is a NumPy array without a copy (``tensor.numpy()``
shares the storage), so the compiled NumPy passes of
:mod:`anyloss.backends.numpy.cross_entropy` and :mod:`anyloss.backends.numpy.ctc`
run on torch tensors as they are; their results come back by ``torch.from_numpy``.
The calls are wrapped as ``torch.library.custom_op`` operators of the ``anyloss``
namespace, each with a fake (meta) implementation giving the output's shape and
dtype and an autograd formula, so that they are opaque, correct nodes for
autograd, ``torch.compile`` and ``torch.library.opcheck``:

``anyloss::cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)``
    The loss alone (no gradient written): the forward of a call that autograd
    does not record.
``anyloss::cross_entropy_fused(...) -> (loss, grad)``
    The loss and, from the same pass over the input, ``d sum(loss) / d input`` (for
    ``'none'``: per element, unscaled, so that the backward scales each row's
    gradient by its own ``grad_output``). The backward returns
    ``grad * grad_output`` (broadcast over the class axis).
``anyloss::ctc_loss(log_probs, targets, input_lengths, target_lengths, blank,
zero_infinity, max_target_length)``
    The per-sample losses ``(N,)``.
``anyloss::ctc_loss_fused(...) -> (losses, grad)``
    The losses and ``d sum(losses) / d log_probs`` ``(T, N, C)`` from the alpha-beta
    recursions; the backward returns ``grad * grad_output[None, :, None]``.
``anyloss::linear_cross_entropy_fused(input, linear_weight, target, linear_bias, weight,
reduction, ignore_index, label_smoothing) -> (loss, grad_input, grad_weight, grad_bias)``
    The 'mean' or 'sum' loss of ``cross_entropy(input @ W.T + b, target)`` and its
    gradients wrt ``input``, ``W`` and ``b`` (an empty ``grad_bias`` without a bias),
    by the row blocks of :mod:`anyloss.backends.numpy.linear_cross_entropy` (no
    ``(N, C)`` logits in memory); the backward scales them by the scalar
    ``grad_output``. (A call autograd does not record runs the NumPy kernel directly,
    :func:`anyloss.backends.torch.linear_cross_entropy`.)

Double backward (``create_graph=True``) recomputes the first gradient by torch's
own operator (``F.cross_entropy`` / ``F.ctc_loss`` / ``F.linear_cross_entropy``) on the
saved inputs, so that a
second derivative is torch's (or torch's own error, for CTC, whose double backward
torch does not implement).

The kernels split their work over :func:`anyloss.get_threads` threads; torch's
intra-op setting (``torch.set_num_threads``) does not reach them.

The operators are defined when this module is first imported, which
:mod:`anyloss.backends.torch` does on the first call that takes this route.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["cross_entropy", "ctc_loss", "linear_cross_entropy"]

_LIB = "anyloss"


# --- the saved gradient --------------------------------------------------------------------
# The fused forward's gradient is as large as the input. The backward hands it on without a
# copy (a fresh allocation of that size costs about as much as the pass itself, in page
# faults): the node keeps it on ``ctx`` (not as a saved tensor, which would hold a second
# reference and make autograd copy it into ``.grad``), gives it away on the first backward,
# scaled in place, and recomputes it by the kernel on a later backward of a retained graph.
# Under tracing (torch.compile's fake or functional tensors) it stays on ``ctx`` and is
# used out of place (tested by opcheck's aot_dispatch checks and a compiled backward).


def _is_plain(t) -> bool:
    return type(t) is torch.Tensor and not torch._is_functional_tensor(t)


def _keep_gradient(ctx, *grads):
    # The gradient outputs are never used downstream: no zeros of their size for cotangents.
    # They are outputs of the recorded node, so they are detached (a view, no copy): the
    # gradient handed to autograd must not itself require grad or point back to the node.
    ctx.set_materialize_grads(False)
    grads = tuple(g.detach() for g in grads)
    if all(_is_plain(g) for g in grads):
        ctx.gradient = [grads]
        ctx.traced = False
    else:
        ctx.gradient = []
        ctx.traced = True
        ctx.traced_gradient = grads


def _take_gradient(ctx, recompute):
    """The forward's gradients (a tuple), owned by the caller from now on (recomputed by
    ``recompute()``, which returns such a tuple, if given away)."""
    if ctx.traced:
        return ctx.traced_gradient
    return ctx.gradient.pop() if ctx.gradient else recompute()


def _scaled(grad, grad_output):
    """``grad * grad_output`` (broadcast), in place where ``grad`` is the caller's own."""
    if not _is_plain(grad) or not _is_plain(grad_output) or grad_output.requires_grad:
        return grad * grad_output
    if grad_output.numel() == 1 and grad_output.item() == 1.0:
        return grad
    return grad.mul_(grad_output)


# --- cross entropy -------------------------------------------------------------------------


def _as_numpy(t):
    """A NumPy view of CPU tensor ``t`` (no copy), or ``None`` for ``None``."""
    return None if t is None else t.detach().numpy()


def _as_tensor(a, dtype):
    """A fresh tensor of ``a`` (a NumPy array or scalar) in torch ``dtype``."""
    a = np.asarray(a)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a).copy()
    return torch.from_numpy(a).to(dtype)


def _check_targets(target, n_classes, ignore_index):
    """torch's ``IndexError`` for a class index outside ``[0, n_classes)`` that is not
    ``ignore_index`` (the NumPy passes read class indices unchecked)."""
    t = target.detach().numpy().reshape(-1)
    bad = ((t < 0) | (t >= n_classes)) & (t != ignore_index)
    if bad.any():
        raise IndexError(f"Target {int(t[np.argmax(bad)])} is out of bounds.")


def _in_float32(input, weight):
    """``(input, weight)``, float16 ones in float32: anyloss computes float16 cross entropy in
    float32 and rounds once (torch's own float16 smoothing sum overflows at logits of 1e4)."""
    if input.dtype != torch.float16:
        return input, weight
    return input.float(), None if weight is None else weight.float()


def _ce_torch(input, target, weight, options, grad):
    """torch's own answer (the loss, and with ``grad`` the gradient of its sum), float16 in
    float32 (:func:`_in_float32`)."""
    dtype = input.dtype
    input, weight = _in_float32(input, weight)
    if not grad:
        return F.cross_entropy(input, target, weight, **options).to(dtype)
    with torch.enable_grad():
        leaf = input.detach().requires_grad_(True)
        loss = F.cross_entropy(leaf, target, weight, **options)
        (g,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach().to(dtype), g.to(dtype)


def _ce_numpy(input, target, weight, ignore_index, reduction, label_smoothing, grad,
              fallback=True):
    """The NumPy pass on views of the tensors: the loss, and with ``grad`` also the
    gradient of its sum wrt ``input``.

    With ``fallback``, a non-finite loss (a +-inf or nan logit, a 'mean' of ignored
    targets only) is answered by torch's kernel instead, whose nan/inf conventions are
    the specification (anyloss's finite shift gives +inf where torch gives nan); that
    costs a second pass only on such input. Inside the fused operator, where torch's
    autograd cannot run, the caller (:func:`cross_entropy`) does that instead."""
    from anyloss.backends.numpy import cross_entropy as kernels

    probabilities = target.is_floating_point()
    if not probabilities:
        _check_targets(target, input.shape[0 if input.ndim == 1 else 1], ignore_index)
    x, t, w = _as_numpy(input), _as_numpy(target), _as_numpy(weight)
    options = dict(ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing)
    if grad and probabilities:
        result = kernels.cross_entropy_and_grad(x, t, w, **options)
    elif grad:
        result = kernels.blocked_cross_entropy_and_grad(x, t, w, **options)
    else:
        result = kernels.cross_entropy(x, t, w, **options)
    if result is NotImplemented:  # below the pass's size floor; probabilities: a bad row
        return _ce_torch(input, target, weight, options, grad)
    loss = _as_tensor(result[0] if grad else result, input.dtype)
    if fallback and not bool(torch.isfinite(loss).all()):
        return _ce_torch(input, target, weight, options, grad)
    return (loss, torch.from_numpy(result[1])) if grad else loss


@torch.library.custom_op(f"{_LIB}::cross_entropy", mutates_args=())
def _cross_entropy_op(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                      ignore_index: int, reduction: str,
                      label_smoothing: float) -> torch.Tensor:
    """Cross entropy of class indices by the NumPy pass (loss only)."""
    return _ce_numpy(input, target, weight, ignore_index, reduction, label_smoothing, False)


@torch.library.custom_op(f"{_LIB}::cross_entropy_fused", mutates_args=())
def _cross_entropy_fused_op(input: torch.Tensor, target: torch.Tensor,
                            weight: torch.Tensor | None, ignore_index: int, reduction: str,
                            label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy and the gradient of its sum wrt ``input``, in one NumPy pass."""
    return _ce_numpy(input, target, weight, ignore_index, reduction, label_smoothing, True,
                     fallback=False)


def _ce_loss_like(input, target, reduction):
    """The loss of the input's shape without its class axis ('none'), or a scalar: for class
    indices and probabilities alike."""
    losses = () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
    return input.new_empty(losses if reduction == "none" else ())


@_cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing):
    return _ce_loss_like(input, target, reduction)


@_cross_entropy_fused_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing):
    return _ce_loss_like(input, target, reduction), torch.empty_like(input)


def _ce_setup(ctx, inputs, output):
    input, target, weight, ignore_index, reduction, label_smoothing = inputs
    ctx.options = dict(ignore_index=ignore_index, reduction=reduction,
                       label_smoothing=label_smoothing)
    ctx.has_weight = weight is not None
    ctx.save_for_backward(input, target, *(() if weight is None else (weight,)))
    _keep_gradient(ctx, output[1])


def _ce_backward(ctx, grad_loss, _grad_of_grad):
    saved = ctx.saved_tensors
    input, target = saved[:2]
    weight = saved[2] if ctx.has_weight else None
    nones = (None,) * 5
    if grad_loss is None:
        return (None, *nones)
    if torch.is_grad_enabled():
        # create_graph: torch's own differentiable gradient of the saved input.
        with torch.enable_grad():
            x32, w32 = _in_float32(input, weight)
            loss = F.cross_entropy(x32, target, w32, **ctx.options).to(input.dtype)
            (g,) = torch.autograd.grad(loss, input, grad_loss, create_graph=True)
        return (g, *nones)
    (grad,) = _take_gradient(ctx, lambda: _ce_numpy(
        input, target, weight, *ctx.options.values(), True, fallback=False)[1:])
    if ctx.options["reduction"] == "none" and input.ndim > 1:
        grad_loss = grad_loss.unsqueeze(1)  # (N, 1, d1, ...) against (N, C, d1, ...)
    return (_scaled(grad, grad_loss), *nones)


_cross_entropy_fused_op.register_autograd(_ce_backward, setup_context=_ce_setup)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """The loss by the custom operators: fused with the gradient when autograd records it.

    ``input`` (N, C), (C,) or (N, C, d1, ...), C-contiguous float32/float64/float16 on the
    CPU;
    ``target`` int64 class indices of the matching shape (checked by the caller);
    ``weight`` ``None`` or (C,) of the input's dtype.
    """
    if torch.is_grad_enabled() and input.requires_grad:
        loss, _ = _cross_entropy_fused_op(input, target, weight, ignore_index, reduction,
                                          label_smoothing)
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(loss).all()):
            # torch's nan/inf conventions (see _ce_numpy); the fused node is dropped.
            x32, w32 = _in_float32(input, weight)
            return F.cross_entropy(x32, target, w32, ignore_index=ignore_index,
                                   reduction=reduction,
                                   label_smoothing=label_smoothing).to(input.dtype)
        return loss
    return _cross_entropy_op(input, target, weight, ignore_index, reduction, label_smoothing)


# --- CTC -----------------------------------------------------------------------------------


def _ctc_numpy(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity,
               max_target_length, grad):
    from anyloss.backends.numpy import ctc as kernels

    args = (_as_numpy(log_probs), _as_numpy(targets), _as_numpy(input_lengths),
            _as_numpy(target_lengths))
    options = dict(blank=blank, zero_infinity=zero_infinity,
                   max_target_length=max_target_length)
    if not grad:
        return _as_tensor(kernels.ctc_loss(*args, **options), log_probs.dtype)
    result = kernels.ctc_loss_and_grad(*args, **options)
    if result is NotImplemented:  # without numba: torch's own kernel and autograd
        with torch.enable_grad():
            leaf = log_probs.detach().requires_grad_(True)
            losses = F.ctc_loss(leaf, targets, input_lengths, target_lengths, blank=blank,
                                reduction="none", zero_infinity=zero_infinity)
            (g,) = torch.autograd.grad(losses.sum(), leaf)
        return losses.detach(), g
    losses, g = result
    return _as_tensor(losses, log_probs.dtype), torch.from_numpy(g)


@torch.library.custom_op(f"{_LIB}::ctc_loss", mutates_args=())
def _ctc_op(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
            target_lengths: torch.Tensor, blank: int, zero_infinity: bool,
            max_target_length: int) -> torch.Tensor:
    """Per-sample CTC losses (N,) by the NumPy kernel."""
    return _ctc_numpy(log_probs, targets, input_lengths, target_lengths, blank,
                      zero_infinity, max_target_length, False)


@torch.library.custom_op(f"{_LIB}::ctc_loss_fused", mutates_args=())
def _ctc_fused_op(log_probs: torch.Tensor, targets: torch.Tensor, input_lengths: torch.Tensor,
                  target_lengths: torch.Tensor, blank: int, zero_infinity: bool,
                  max_target_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample CTC losses (N,) and the gradient of their sum (T, N, C)."""
    return _ctc_numpy(log_probs, targets, input_lengths, target_lengths, blank,
                      zero_infinity, max_target_length, True)


@_ctc_op.register_fake
def _(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity,
      max_target_length):
    return log_probs.new_empty(log_probs.shape[1])


@_ctc_fused_op.register_fake
def _(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity,
      max_target_length):
    return log_probs.new_empty(log_probs.shape[1]), torch.empty_like(
        log_probs, memory_format=torch.contiguous_format)


def _ctc_setup(ctx, inputs, output):
    log_probs, targets, input_lengths, target_lengths, blank, zero_infinity, length = inputs
    ctx.options = dict(blank=blank, zero_infinity=zero_infinity)
    ctx.max_target_length = length
    ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths)
    _keep_gradient(ctx, output[1])


def _ctc_backward(ctx, grad_losses, _grad_of_grad):
    log_probs, targets, input_lengths, target_lengths = ctx.saved_tensors
    nones = (None,) * 6
    if grad_losses is None:
        return (None, *nones)
    if torch.is_grad_enabled():
        # create_graph: torch's differentiable gradient (torch raises its own error
        # for a second derivative of ctc_loss).
        with torch.enable_grad():
            losses = F.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                reduction="none", **ctx.options)
            (g,) = torch.autograd.grad(losses, log_probs, grad_losses, create_graph=True)
        return (g, *nones)
    (grad,) = _take_gradient(ctx, lambda: _ctc_numpy(
        log_probs, targets, input_lengths, target_lengths, *ctx.options.values(),
        ctx.max_target_length, True)[1:])
    return (_scaled(grad, grad_losses[None, :, None]), *nones)


_ctc_fused_op.register_autograd(_ctc_backward, setup_context=_ctc_setup)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) by the custom operators (fused with the gradient when
    autograd records it). ``log_probs`` (T, N, C) float32/float64 on the CPU (any
    strides); integer ``targets`` (padded (N, S) or concatenated) and lengths (N,)."""
    args = (log_probs, targets, input_lengths, target_lengths, blank, zero_infinity,
            max_target_length)
    if torch.is_grad_enabled() and log_probs.requires_grad:
        losses, _ = _ctc_fused_op(*args)
        return losses
    return _ctc_op(*args)


# --- linear cross entropy ------------------------------------------------------------------


def _lce_torch(input, linear_weight, target, linear_bias, weight, options):
    """torch's loss and its gradients wrt input, weight and bias (torch's conventions)."""
    with torch.enable_grad():
        leaves = [a.detach().requires_grad_(True) for a in (input, linear_weight)]
        bias = None if linear_bias is None else linear_bias.detach().requires_grad_(True)
        loss = F.linear_cross_entropy(*leaves, target, linear_bias=bias, weight=weight,
                                      **options)
        grads = torch.autograd.grad(loss, [*leaves, *(() if bias is None else (bias,))])
    grad_bias = grads[2] if bias is not None else input.new_empty(0)
    return loss.detach(), grads[0], grads[1], grad_bias


def _lce_numpy(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
               label_smoothing):
    """The NumPy row-block kernel on views of the tensors: the loss and its three gradients
    (torch's own, :func:`_lce_torch`, where the kernel declines)."""
    from anyloss.backends.numpy import linear_cross_entropy as kernels

    options = dict(reduction=reduction, ignore_index=ignore_index,
                   label_smoothing=label_smoothing)
    _check_targets(target, linear_weight.shape[0], ignore_index)
    result = kernels.linear_cross_entropy_and_grad(
        _as_numpy(input), _as_numpy(linear_weight), _as_numpy(target),
        linear_bias=_as_numpy(linear_bias), weight=_as_numpy(weight), options=None, **options)
    if result is NotImplemented:
        return _lce_torch(input, linear_weight, target, linear_bias, weight, options)
    loss, grad_input, grad_weight, grad_bias = result
    grad_bias = input.new_empty(0) if grad_bias is None else torch.from_numpy(grad_bias)
    return (_as_tensor(loss, input.dtype), torch.from_numpy(grad_input),
            torch.from_numpy(grad_weight), grad_bias)


@torch.library.custom_op(f"{_LIB}::linear_cross_entropy_fused", mutates_args=())
def _lce_fused_op(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
                  linear_bias: torch.Tensor | None, weight: torch.Tensor | None,
                  reduction: str, ignore_index: int, label_smoothing: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reduced loss and its gradients wrt input, weight and bias, by row blocks."""
    return _lce_numpy(input, linear_weight, target, linear_bias, weight, reduction,
                      ignore_index, label_smoothing)


@_lce_fused_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
      label_smoothing):
    grad_bias = input.new_empty(0) if linear_bias is None else torch.empty_like(linear_bias)
    return (input.new_empty(()), torch.empty_like(input), torch.empty_like(linear_weight),
            grad_bias)


def _lce_setup(ctx, inputs, output):
    input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing = inputs
    ctx.options = dict(reduction=reduction, ignore_index=ignore_index,
                       label_smoothing=smoothing)
    ctx.has_bias = linear_bias is not None
    ctx.has_weight = weight is not None
    ctx.save_for_backward(input, linear_weight, target,
                          *(() if linear_bias is None else (linear_bias,)),
                          *(() if weight is None else (weight,)))
    _keep_gradient(ctx, *output[1:])


def _lce_backward(ctx, grad_loss, *_grads_of_grads):
    saved = list(ctx.saved_tensors)
    input, linear_weight, target = saved[:3]
    linear_bias = saved[3] if ctx.has_bias else None
    weight = saved[-1] if ctx.has_weight else None
    nones = (None,) * 4  # weight, reduction, ignore_index, label_smoothing
    if grad_loss is None:
        return (None, None, None, None, *nones)
    differentiable = [input, linear_weight, *(() if linear_bias is None else (linear_bias,))]
    if torch.is_grad_enabled():
        # create_graph: torch's own differentiable gradients of the saved inputs.
        with torch.enable_grad():
            loss = F.linear_cross_entropy(input, linear_weight, target,
                                          linear_bias=linear_bias, weight=weight,
                                          **ctx.options)
            needed = [a for a in differentiable if a.requires_grad]
            found = iter(torch.autograd.grad(loss, needed, grad_loss, create_graph=True))
            grads = [next(found) if a.requires_grad else None for a in differentiable]
    else:
        grads = _take_gradient(ctx, lambda: _lce_numpy(
            input, linear_weight, target, linear_bias, weight, *ctx.options.values())[1:])
        grads = [_scaled(g, grad_loss) for g in grads[:len(differentiable)]]
    grad_bias = grads[2] if ctx.has_bias else None
    return (grads[0], grads[1], None, grad_bias, *nones)


_lce_fused_op.register_autograd(_lce_backward, setup_context=_lce_setup)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
                         ignore_index, label_smoothing):
    """The 'mean' or 'sum' loss by the fused operator, for a call autograd records.

    ``input`` (N, D) or (D,), ``linear_weight`` (C, D), ``linear_bias`` ``None`` or (C,),
    float32/float64 CPU tensors of one dtype; ``target`` int64 class indices (checked by
    the caller); ``weight`` ``None`` or a (C,) tensor of that dtype that takes no gradient.
    A loss that is not finite is answered by ``F.linear_cross_entropy`` (torch's nan/inf
    conventions), the fused node dropped.
    """
    loss = _lce_fused_op(input, linear_weight, target, linear_bias, weight, reduction,
                         ignore_index, label_smoothing)[0]
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(loss).all()):
        return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                      weight=weight, reduction=reduction,
                                      ignore_index=ignore_index,
                                      label_smoothing=label_smoothing)
    return loss
