"""PyTorch fast paths: the native ``torch.nn.functional`` kernels (and cuDNN on the GPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) from ``torch.nn.functional.ctc_loss``; torch's autograd applies."""
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                      reduction="none", zero_infinity=zero_infinity)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum, by torch autograd."""
    with torch.enable_grad():
        leaf = log_probs.detach().requires_grad_(True)
        losses = ctc_loss(leaf, targets, input_lengths, target_lengths, blank=blank,
                          zero_infinity=zero_infinity, max_target_length=max_target_length)
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
    return losses.detach(), grad


_INT64 = torch.iinfo(torch.int64)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """``torch.nn.functional.cross_entropy`` itself (autograd, CUDA, every option).

    Class indices of another integer dtype are widened to int64, which torch
    requires; an ``ignore_index`` beyond int64 declines to the generic formula.
    16-bit floats compute in float32 (torch's own float16 smoothing sum overflows
    at logits of 1e4) and the result is rounded once.
    """
    if not _INT64.min <= ignore_index <= _INT64.max:
        return NotImplemented
    if not target.is_floating_point() and target.dtype != torch.int64:
        target = target.to(torch.int64)
    dtype = input.dtype
    if dtype in (torch.float16, torch.bfloat16):
        input = input.float()
        weight = None if weight is None else weight.float()
        target = target.float() if target.is_floating_point() else target
    loss = F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)
    return loss.to(dtype)


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """The loss and, by torch autograd, its gradient wrt ``input`` (of the sum for 'none')."""
    with torch.enable_grad():
        leaf = input.detach().requires_grad_(True)
        loss = cross_entropy(leaf, target, weight, ignore_index=ignore_index,
                             reduction=reduction, label_smoothing=label_smoothing)
        if loss is NotImplemented:
            return NotImplemented
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


# --- native twins, tried before anyloss checks anything (anyloss._dispatch.NATIVE_FIRST) ---
# Each takes the public arguments (reduction resolved) and declines what is not the plain
# case: CPU tensors only (on CUDA a bad class index is a device-side assert, which
# anyloss's own checks must see first), float32/float64 input (16-bit floats follow
# anyloss's float32 accumulation instead), int64 class indices, a weight of the input's
# dtype, no empty input (torch's margin kernels read uninitialised memory there). When
# torch raises, anyloss._dispatch.call_native_first falls back to the checked path.

_NATIVE_FLOATS = (torch.float32, torch.float64)
_CPU = torch.device("cpu")


def _plain(input, target, weight=None) -> bool:
    """Whether the native twin's result is anyloss's for these arguments (see above)."""
    return (input.device == _CPU and input.dtype in _NATIVE_FLOATS and input.numel() > 0
            and target.device == _CPU
            and (weight is None or (weight.dtype == input.dtype and weight.device == _CPU)))


def nll_loss_native_first(input, target, weight, *, ignore_index, reduction):
    if not (target.dtype == torch.int64 and _plain(input, target, weight)):
        return NotImplemented
    return F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)


def cross_entropy_native_first(input, target, weight, *, ignore_index, reduction,
                               label_smoothing):
    if not ((target.dtype == torch.int64 or target.dtype == input.dtype)
            and _plain(input, target, weight)):
        return NotImplemented
    return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)


def multi_margin_loss_native_first(input, target, *, p, margin, weight, reduction):
    if not (target.dtype == torch.int64 and _plain(input, target, weight)):
        return NotImplemented
    return F.multi_margin_loss(input, target, p=p, margin=margin, weight=weight,
                               reduction=reduction)


def multilabel_margin_loss_native_first(input, target, *, reduction):
    if not (target.dtype == torch.int64 and _plain(input, target)):
        return NotImplemented
    return F.multilabel_margin_loss(input, target, reduction=reduction)


# --- building blocks of the generic formulas (looked up by anyloss._array.native) --------


def _records_gradient(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _softplus(x):
    # -logsigmoid(-x) is exact everywhere; F.softplus turns linear above 20.
    return -F.logsigmoid(-x)


def _clamp_min_identity_gradient(x, lower):
    """torch's own idiom (gaussian_nll_loss): clamp a clone under no_grad."""
    if not _records_gradient(x):
        return torch.clamp_min(x, lower)
    out = x.clone()
    with torch.no_grad():
        out.clamp_(min=lower)
    return out


def _clamped_log(x, floor):
    if _records_gradient(x):
        return NotImplemented  # the portable double where keeps the gradient finite at 0
    return torch.log(x).clamp_min_(floor)


def _clamped_log1p(x, floor):
    if _records_gradient(x):
        return NotImplemented
    return torch.log1p(x).clamp_min_(floor)


def _take_along_axis(x, indices, axis):
    if indices.dtype != torch.int64:
        indices = indices.to(torch.int64)
    if indices.ndim == x.ndim and all(
        i == n for d, (i, n) in enumerate(zip(indices.shape, x.shape)) if d != axis % x.ndim
    ):
        return torch.gather(x, axis, indices)  # no broadcasting to do: the lighter call
    return torch.take_along_dim(x, indices, dim=axis)


#: Elements per block of anyloss._ops.reduce_blockwise: 1 MiB of float32, which ATen's
#: threads share (half each on 2 cores, within a core's L2 cache). Few blocks keep the
#: dispatch cost and the number of parallel regions small: each region waits for every
#: thread, and on a busy machine a thread may be off its core for a scheduler tick.
#: (Measured on a 2-core EPYC: 16K elements per block is 2x slower when idle, 1M too.)
BLOCK_ELEMENTS = 1 << 18


def _blockwise_elements(arrays):
    """Block size for anyloss._ops.reduce_blockwise, or None on a GPU or under autograd."""
    if any(a.device.type != "cpu" for a in arrays) or _records_gradient(*arrays):
        return None
    return BLOCK_ELEMENTS


def _extrema(x):
    low, high = torch.aminmax(x)
    return low.item(), high.item()


BUILDING_BLOCKS = {
    "log_sigmoid": F.logsigmoid,
    "softplus": _softplus,
    "xlogy": torch.special.xlogy,
    "relu": lambda x: torch.clamp_min(x, 0.0),  # gradient 1 at 0, as torch's margin losses
    "positive_part": torch.relu,  # gradient 0 at 0
    "clip": torch.clamp,
    "clamp_min_identity_gradient": _clamp_min_identity_gradient,
    "clamped_log": _clamped_log,
    "clamped_log1p": _clamped_log1p,
    "logsumexp": lambda x, axis, keepdims: torch.logsumexp(x, dim=axis, keepdim=keepdims),
    "log_softmax": lambda x, axis: F.log_softmax(x, dim=axis),
    "take_along_axis": _take_along_axis,
    "clamp_min": torch.clamp_min,
    "sqrt_zero_gradient": lambda s: (NotImplemented if s.requires_grad and torch.is_grad_enabled()
                                     else torch.sqrt(s)),
    "mean": torch.mean,
    "sum_of_products": lambda a, b, axis: torch.linalg.vecdot(a, b, dim=axis),
    "blockwise_elements": _blockwise_elements,
    "extrema": _extrema,
}
