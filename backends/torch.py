"""PyTorch kernels: ``torch.nn.functional`` itself (and cuDNN on the GPU), and torch's own
building blocks of the generic formulas.

Every function here is the target of a record of :mod:`anyloss._registry`,
declared beside the anyloss function it stands in for.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,): float32/float64 CPU tensors by anyloss's NumPy kernel
    (the custom operator ``anyloss::ctc_loss``, see :mod:`.torch_ops`), everything else by
    ``torch.nn.functional.ctc_loss`` (with torch's autograd)."""
    if _numpy_route(log_probs, targets, input_lengths, target_lengths, numba=True):
        return _torch_ops().ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                     blank=blank, zero_infinity=zero_infinity,
                                     max_target_length=max_target_length)
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                      reduction="none", zero_infinity=zero_infinity)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum: by the NumPy kernel where
    :func:`ctc_loss` takes it, else by torch autograd; declines under torch.compile (see
    :func:`_declines_autograd_inside_compile`)."""
    if _declines_autograd_inside_compile():
        return NotImplemented
    if _numpy_route(log_probs, targets, input_lengths, target_lengths, numba=True):
        return _torch_ops()._ctc_numpy(log_probs, targets, input_lengths, target_lengths,
                                       blank, zero_infinity, max_target_length, True)
    with torch.enable_grad():
        leaf = log_probs.detach().requires_grad_(True)
        losses = ctc_loss(leaf, targets, input_lengths, target_lengths, blank=blank,
                          zero_infinity=zero_infinity, max_target_length=max_target_length)
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
    return losses.detach(), grad


_INT64 = torch.iinfo(torch.int64)


def _declines_autograd_inside_compile() -> bool:
    """Whether a ``*_and_grad`` kernel declines: while torch.compile traces, where dynamo
    refuses ``torch.autograd.grad`` (``trace_autograd_ops`` is off by default) and the
    NumPy passes would see fake tensors. anyloss's written-once closed-form gradients
    (or, for CTC, its alpha-beta recursion) are traced instead."""
    return torch.compiler.is_compiling()


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
    options = dict(ignore_index=ignore_index, reduction=reduction,
                   label_smoothing=label_smoothing)
    if _cross_entropy_route(input, target, weight, ignore_index):
        return _torch_ops().cross_entropy(input, target, weight, **options)
    dtype = input.dtype
    if dtype in (torch.float16, torch.bfloat16):
        input = input.float()
        weight = None if weight is None else weight.float()
        target = target.float() if target.is_floating_point() else target
        if _cross_entropy_route(input, target, weight, ignore_index):  # the float32 copy
            return _torch_ops().cross_entropy(input, target, weight, **options).to(dtype)
    return F.cross_entropy(input, target, weight, **options).to(dtype)


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """The loss and its gradient wrt ``input`` (of the sum for 'none'): by one NumPy pass
    where :func:`cross_entropy` routes there, else by torch autograd; declines under
    torch.compile (see :func:`_declines_autograd_inside_compile`)."""
    if _declines_autograd_inside_compile():
        return NotImplemented
    if (_INT64.min <= ignore_index <= _INT64.max
            and (target.dtype == torch.int64 or target.is_floating_point())
            and _cross_entropy_route(input, target, weight, ignore_index)):
        return _torch_ops()._ce_numpy(input, target, weight, ignore_index, reduction,
                                      label_smoothing, True)
    with torch.enable_grad():
        leaf = input.detach().requires_grad_(True)
        loss = cross_entropy(leaf, target, weight, ignore_index=ignore_index,
                             reduction=reduction, label_smoothing=label_smoothing)
        if loss is NotImplemented:
            return NotImplemented
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def _torch_options(options):
    """anyloss's ``LinearCrossEntropyOptions`` as torch's (torch's own pass through)."""
    if options is None or isinstance(options, torch.nn.LinearCrossEntropyOptions):
        return options
    acc_dtype = options.acc_dtype
    if acc_dtype is not None and not isinstance(acc_dtype, torch.dtype):
        acc_dtype = getattr(torch, str(acc_dtype).rsplit(".", 1)[-1])
    return torch.nn.LinearCrossEntropyOptions(
        allow_retain_graph=options.allow_retain_graph,
        batch_chunk_size=options.batch_chunk_size,
        chunking_method=options.chunking_method,
        acc_policy=options.acc_policy,
        acc_dtype=acc_dtype,
    )


def linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
                         ignore_index, label_smoothing, options):
    """``F.linear_cross_entropy`` itself (autograd, CUDA, the chunked path with ``options``),
    or anyloss's NumPy row-block kernel on float32/float64 CPU tensors without ``options``.

    Class indices of another integer dtype are widened to int64, which torch requires.
    A call that autograd does not record runs the kernel on views of the tensors
    (:func:`_linear_cross_entropy_numpy`); one that it records, with a 'mean' or 'sum'
    reduction, runs the fused operator ``anyloss::linear_cross_entropy_fused``
    (:func:`_linear_cross_entropy_fused`), which computes the three gradients in the
    forward's pass over the row blocks, as the NumPy ``linear_cross_entropy_and_grad``
    does. Both beat torch's plain path on CPU (``benchmarks/bench_torch_cpu.py``).
    """
    if target.dtype != torch.int64:
        target = target.to(torch.int64)
    if options is None:
        loss = _linear_cross_entropy_numpy(input, linear_weight, target, linear_bias, weight,
                                           reduction, ignore_index, label_smoothing)
        if loss is NotImplemented:
            loss = _linear_cross_entropy_fused(input, linear_weight, target, linear_bias,
                                               weight, reduction, ignore_index,
                                               label_smoothing)
        if loss is not NotImplemented:
            return loss
    return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias,
                                  weight=weight, reduction=reduction,
                                  ignore_index=ignore_index,
                                  label_smoothing=label_smoothing,
                                  options=_torch_options(options))


def _linear_cross_entropy_numpy(input, linear_weight, target, linear_bias, weight, reduction,
                                ignore_index, label_smoothing):
    """The NumPy kernel's loss for a call autograd does not record, or ``NotImplemented``
    (autograd recording, torch.compile tracing, other dtypes or devices, no numba, or a
    non-finite loss, whose nan/inf conventions stay torch's)."""
    arrays = [a for a in (input, linear_weight, linear_bias, weight) if a is not None]
    if torch.is_grad_enabled() and any(a.requires_grad for a in arrays):
        return NotImplemented
    if torch.compiler.is_compiling() or not _lce_numpy_route(arrays, target):
        return NotImplemented
    from anyloss.backends.numpy import linear_cross_entropy as kernels

    def view(t):
        return None if t is None else t.detach().numpy()

    loss = kernels.linear_cross_entropy(
        view(input), view(linear_weight), view(target), linear_bias=view(linear_bias),
        weight=view(weight), reduction=reduction,
        ignore_index=ignore_index, label_smoothing=label_smoothing, options=None)
    if loss is NotImplemented:
        return NotImplemented
    loss = torch.from_numpy(np.array(loss, dtype=loss.dtype, copy=True)).to(input.dtype)
    return loss if bool(torch.isfinite(loss).all()) else NotImplemented


def _lce_numpy_route(arrays, target) -> bool:
    """Whether the NumPy row-block kernel may take these tensors (``arrays``: the input,
    the linear weight, and the bias and class weight where given): the NumPy route's
    conditions (:func:`_numpy_route`) and one floating dtype for all of them."""
    return (_numpy_route(*arrays, target, numba=True)
            and all(a.dtype == arrays[0].dtype for a in arrays))


def _linear_cross_entropy_fused(input, linear_weight, target, linear_bias, weight, reduction,
                                ignore_index, label_smoothing):
    """The fused operator's loss for a call autograd records with the linear weight as a
    leaf (training the layer: the operator computes all three gradients, so with a frozen
    weight torch's two products are cheaper), or ``NotImplemented``: a 'none' reduction
    (whose weight gradient needs each row's own ``grad_output``), a class weight that
    takes a gradient, torch.func transforms, other dtypes or devices, no numba, shapes
    other than (N, D) or (D,) input, (C, D) weight and (C,) bias."""
    if not (torch.is_grad_enabled() and linear_weight.requires_grad):
        return NotImplemented
    if reduction == "none" or (weight is not None and weight.requires_grad):
        return NotImplemented
    arrays = [a for a in (input, linear_weight, linear_bias, weight) if a is not None]
    if not _lce_numpy_route(arrays, target):
        return NotImplemented
    if input.ndim not in (1, 2) or linear_weight.ndim != 2 or (
            linear_bias is not None and linear_bias.shape != linear_weight.shape[:1]):
        return NotImplemented
    return _torch_ops().linear_cross_entropy(
        input, linear_weight, target, linear_bias=linear_bias, weight=weight,
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)


def linear_cross_entropy_and_grad(input, linear_weight, target, *, linear_bias, weight,
                                  reduction, ignore_index, label_smoothing, options):
    """The loss and, by torch autograd, its gradients wrt input, weight and bias (of the
    losses' sum for 'none'); declines under torch.compile (see
    :func:`_declines_autograd_inside_compile`)."""
    if _declines_autograd_inside_compile():
        return NotImplemented
    with torch.enable_grad():
        leaves = [a.detach().requires_grad_(True) for a in (input, linear_weight)]
        bias = None if linear_bias is None else linear_bias.detach().requires_grad_(True)
        loss = linear_cross_entropy(*leaves, target, linear_bias=bias, weight=weight,
                                    reduction=reduction, ignore_index=ignore_index,
                                    label_smoothing=label_smoothing, options=options)
        grads = torch.autograd.grad(loss.sum(), [*leaves, *([] if bias is None else [bias])])
    grad_bias = grads[2] if bias is not None else None
    return loss.detach(), grads[0], grads[1], grad_bias


# --- CPU tensors by anyloss's NumPy kernels (custom operators, :mod:`.torch_ops`) ----------
# A float32/float64 CPU tensor is a NumPy array without a copy: the compiled NumPy passes,
# which beat torch's CPU kernels, run on it through torch.library custom operators (fake
# implementations and autograd formulas included, so autograd and torch.compile see one
# opaque node). The route steps aside for what those kernels do not take or do not win:
# other devices and dtypes, no numba, non-contiguous cross-entropy input other than rows
# apart (``logits[:, :V]``; a copy would cost what the pass saves), small problems, a
# weight that requires grad, and torch.func transforms (vmap/grad), which have no rule for
# the operators.

#: Cross-entropy inputs smaller than this (elements) keep torch's kernel: below it the
#: NumPy pass declines (anyloss.backends.numpy.cross_entropy._CE_MIN_ELEMENTS).
_ROUTE_MIN_ELEMENTS = 1 << 15


def _torch_ops():
    """:mod:`anyloss.backends.torch_ops`, imported (and its operators defined) on first use
    (an import statement, which torch.compile runs while it traces)."""
    from anyloss.backends import torch_ops

    return torch_ops


def _numpy_route(*tensors, numba, floats=None) -> bool:
    """Whether the NumPy kernels may take these tensors: plain CPU tensors (the first one
    float32/float64, or of a dtype in ``floats``), numba installed if ``numba``, no
    torch.func transform active."""
    from anyloss.backends.numpy import compiled  # numba's import: only when routing

    first = tensors[0]
    if numba and not compiled.HAVE_NUMBA:
        return False
    if not all(isinstance(t, torch.Tensor) and t.device == _CPU for t in tensors):
        return False
    if first.dtype not in (_NATIVE_FLOATS if floats is None else floats):
        return False
    return torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active()


def _cross_entropy_route(input, target, weight, ignore_index) -> bool:
    """Whether :func:`cross_entropy_plain_cpu` / :func:`cross_entropy` hand this call to the
    NumPy pass: class indices (int64) of the matching shape, float32, float64 or float16
    input of ``_ROUTE_MIN_ELEMENTS`` or more (float16 computes in float32 there, converted
    by compiled loops, which torch's ``Tensor.float()`` is not: 13 ms against 1.4 ms for 8M
    values, 2-core AMD EPYC), contiguous or 2-d with its rows apart (``logits[:, :V]`` of a
    wider tensor, which the row kernels take as it is), a (C,) weight of its dtype that
    takes no gradient, and (eagerly) every index in range or ignored (or, for class
    probabilities, :func:`_probability_route`): otherwise the call declines here, and
    torch's kernel or anyloss's checks answer as before."""
    if input.numel() < _ROUTE_MIN_ELEMENTS:
        return False
    if target.dtype != torch.int64:
        return _probability_route(input, target, weight, ignore_index)
    if not _numpy_route(input, target, *(() if weight is None else (weight,)), numba=True,
                        floats=_CE_FLOATS):
        return False
    if input.ndim == 0 or not (input.is_contiguous()
                               or (input.ndim == 2 and input.stride(1) == 1)):
        return False
    n_classes = input.shape[0 if input.ndim == 1 else 1]
    expected = () if input.ndim == 1 else (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected or n_classes == 0:
        return False
    if weight is not None and (weight.dtype != input.dtype or weight.requires_grad
                               or weight.shape != (n_classes,)
                               or not weight.is_contiguous()):
        return False
    if not _INT64.min <= ignore_index <= _INT64.max:
        return False
    if torch.compiler.is_compiling():
        return True  # the operator itself raises torch's IndexError for a bad index
    extremes = torch.aminmax(target)
    low, high = int(extremes.min), int(extremes.max)
    if low >= 0 and high < n_classes:
        return True
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    return not bool(bad.any())


def _probability_route(input, target, weight, ignore_index) -> bool:
    """The route of :func:`_cross_entropy_route` for a target of class probabilities: a
    contiguous float32/float64 ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dK)`` input (of
    ``_ROUTE_MIN_ELEMENTS`` or more, checked by the caller), a target of its dtype and shape
    that takes no gradient (the operators give none for it), a weight as for class indices,
    and a negative ``ignore_index`` (torch raises for another, which its kernel then does)."""
    if not _numpy_route(input, target, *(() if weight is None else (weight,)), numba=True):
        return False
    if (input.ndim == 0 or not input.is_contiguous() or target.dtype != input.dtype
            or target.shape != input.shape or not target.is_contiguous()
            or target.requires_grad or ignore_index >= 0):
        return False
    n_classes = input.shape[0 if input.ndim == 1 else 1]
    return weight is None or (weight.dtype == input.dtype and not weight.requires_grad
                              and weight.shape == (n_classes,) and weight.is_contiguous())


# --- kernels tried before anyloss checks anything (stage 'first') ----------------------------
# Each takes the public arguments (reduction resolved) and declines what is not the plain
# case: CPU tensors only (on CUDA a bad class index is a device-side assert, which
# anyloss's own checks must see first), float32/float64 input (16-bit floats follow
# anyloss's float32 accumulation instead), int64 class indices, a weight of the input's
# dtype, no empty input (torch's margin kernels read uninitialised memory there).

_NATIVE_FLOATS = (torch.float32, torch.float64)
#: The input dtypes of the cross-entropy route (:func:`_cross_entropy_route`).
_CE_FLOATS = (*_NATIVE_FLOATS, torch.float16)
_CPU = torch.device("cpu")
#: The message of a failed CPU allocation, which torch raises as a RuntimeError.
_ALLOCATION_FAILURE = "can't allocate memory"


def _bad_input_declines(kernel):
    """Decorate a stage-'first' kernel: torch's errors for bad input become a decline.

    torch reports bad arguments with ``RuntimeError`` (shapes, dtypes),
    ``IndexError`` (a class index out of range), ``ValueError`` and ``TypeError``;
    for those the kernel returns ``NotImplemented``, and anyloss's checked path
    raises its own error with its own wording. An out-of-memory error is not bad
    input: it propagates, as does every other exception.
    """

    @functools.wraps(kernel)
    def declining(*args, **kwargs):
        try:
            return kernel(*args, **kwargs)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, IndexError, ValueError, TypeError) as exc:
            if _ALLOCATION_FAILURE in str(exc):
                raise
            return NotImplemented

    return declining


def _plain(input, target, weight=None) -> bool:
    """Whether the kernel's result is anyloss's for these arguments (see above)."""
    return (input.device == _CPU and input.dtype in _NATIVE_FLOATS and input.numel() > 0
            and target.device == _CPU
            and (weight is None or (weight.dtype == input.dtype and weight.device == _CPU)))


@_bad_input_declines
def nll_loss(input, target, weight, *, ignore_index, reduction):
    """``F.nll_loss`` of a plain CPU call (see above), or ``NotImplemented``."""
    if not (target.dtype == torch.int64 and _plain(input, target, weight)):
        return NotImplemented
    return F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)


@_bad_input_declines
def cross_entropy_plain_cpu(input, target, weight, *, ignore_index, reduction,
                            label_smoothing):
    """``F.cross_entropy`` of a plain CPU call (see above), or ``NotImplemented``."""
    if not ((target.dtype == torch.int64 or target.dtype == input.dtype)
            and _plain(input, target, weight)):
        return NotImplemented
    if _cross_entropy_route(input, target, weight, ignore_index):
        return _torch_ops().cross_entropy(input, target, weight, ignore_index=ignore_index,
                                          reduction=reduction,
                                          label_smoothing=label_smoothing)
    return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)


@_bad_input_declines
def multi_margin_loss(input, target, *, p, margin, weight, reduction):
    """``F.multi_margin_loss`` of a plain CPU call (see above), or ``NotImplemented``.

    Declines a 1-d input under torch.compile: torch's decomposition there returns shape
    (1,) for ``reduction='none'``, where eager torch returns a 0-d tensor (torch 2.13).
    """
    if input.ndim < 2 and torch.compiler.is_compiling():
        return NotImplemented
    if not (target.dtype == torch.int64 and _plain(input, target, weight)):
        return NotImplemented
    return F.multi_margin_loss(input, target, p=p, margin=margin, weight=weight,
                               reduction=reduction)


@_bad_input_declines
def multilabel_margin_loss(input, target, *, reduction):
    """``F.multilabel_margin_loss`` of a plain CPU call (see above), or ``NotImplemented``.

    Declines under torch.compile: there torch replaces the kernel by its decomposition
    (``torch._decomp.decompositions.multilabel_margin_loss_forward``, torch 2.13), which
    also sums the hinge terms of the positions after a row's first -1, as if each were a
    target of class 0 (a row ``[-1, ...]`` gives 1 instead of 0); anyloss's formula,
    traced instead, gives eager torch's value.
    """
    if torch.compiler.is_compiling():
        return NotImplemented
    if not (target.dtype == torch.int64 and _plain(input, target)):
        return NotImplemented
    return F.multilabel_margin_loss(input, target, reduction=reduction)


# --- primitives ------------------------------------------------------------------------------


def stop_gradient(x):
    """``x`` detached from autograd (the same values, no gradient through it)."""
    return x.detach()


def records_gradient(x):
    """Whether autograd records the operations on ``x``."""
    return _records_gradient(x)


def is_traced(x):
    """Whether ``x``'s values cannot be read here: ``torch.compile`` traces the call, or
    ``x`` is a tensor batched by ``torch.func.vmap`` (whose ``.item()`` raises)."""
    return torch.compiler.is_compiling() or torch._C._functorch.is_batchedtensor(x)


def is_compiling(x):
    """Whether ``torch.compile`` is tracing the call that holds ``x`` (its sizes may then be
    symbolic)."""
    return torch.compiler.is_compiling()


# --- building blocks of the generic formulas (stage 'block') ----------------------------------
# Each may decline (NotImplemented) a call that autograd must see through: the portable
# formula's double where keeps gradients finite where torch's kernel would not.


def _records_gradient(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


log_sigmoid = F.logsigmoid
xlogy = torch.special.xlogy
positive_part = torch.relu  # gradient 0 at 0
clip = torch.clamp
clamp_min = torch.clamp_min
mean = torch.mean


def softplus(x):
    """``softplus`` as ``-logsigmoid(-x)``: exact everywhere (``F.softplus`` turns linear
    above 20)."""
    return -F.logsigmoid(-x)


def binary_cross_entropy_terms(x, y):
    """torch's elementwise binary cross entropy, with its hand-written gradients."""
    return F.binary_cross_entropy(x, y, reduction="none")


def binary_cross_entropy_with_logits_terms(x, y, pos_weight):
    """torch's elementwise binary cross entropy of logits, with its own gradients."""
    return F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight, reduction="none")


def absolute(x):
    """``|x|``; torch's derivative at 0 is already 0."""
    return torch.abs(x)


def relu(x):
    """``max(x, 0)`` with gradient 1 at 0, as torch's margin losses have it."""
    return torch.clamp_min(x, 0.0)


def clamp_min_identity_gradient(x, lower):
    """torch's own idiom (``gaussian_nll_loss``): clamp a clone under ``no_grad``."""
    if not _records_gradient(x):
        return torch.clamp_min(x, lower)
    out = x.clone()
    with torch.no_grad():
        out.clamp_(min=lower)
    return out


def clamped_log(x, floor):
    """``max(log(x), floor)``, clamped in place; declines under autograd."""
    if _records_gradient(x):
        return NotImplemented  # the portable double where keeps the gradient finite at 0
    return torch.log(x).clamp_min_(floor)


def clamped_log1p(x, floor):
    """``max(log1p(x), floor)``, clamped in place; declines under autograd."""
    if _records_gradient(x):
        return NotImplemented
    return torch.log1p(x).clamp_min_(floor)


def sqrt_zero_gradient(s):
    """``sqrt(s)``; declines under autograd."""
    if _records_gradient(s):
        return NotImplemented  # the portable double where gives gradient 0 at 0
    return torch.sqrt(s)


def logsumexp(x, axis, keepdims):
    """``torch.logsumexp`` along ``axis``."""
    return torch.logsumexp(x, dim=axis, keepdim=keepdims)


def log_softmax(x, axis):
    """``F.log_softmax`` along ``axis``."""
    return F.log_softmax(x, dim=axis)


def sum_of_products(a, b, axis):
    """``sum(a * b, axis)`` by ``torch.linalg.vecdot``."""
    return torch.linalg.vecdot(a, b, dim=axis)


def take_along_axis(x, indices, axis):
    """``take_along_axis`` by ``torch.gather`` (no broadcasting) or ``take_along_dim``."""
    if indices.dtype != torch.int64:
        indices = indices.to(torch.int64)
    if indices.ndim == x.ndim and all(
        i == n for d, (i, n) in enumerate(zip(indices.shape, x.shape, strict=True))
        if d != axis % x.ndim
    ):
        return torch.gather(x, axis, indices)  # no broadcasting to do: the lighter call
    return torch.take_along_dim(x, indices, dim=axis)


#: Elements per block of anyloss._blocked.reduce_blockwise: 1 MiB of float32, which ATen's
#: threads share (half each on 2 cores, within a core's L2 cache); measured in
#: benchmarks/README.md.
BLOCK_ELEMENTS = 1 << 18


def blockwise_elements(arrays):
    """Block size for anyloss._blocked.reduce_blockwise; declines on a GPU or under autograd."""
    if any(a.device.type != "cpu" for a in arrays) or _records_gradient(*arrays):
        return NotImplemented
    return BLOCK_ELEMENTS


def extrema(x):
    """``(min, max)`` of ``x`` as Python numbers, by ``torch.aminmax``."""
    low, high = torch.aminmax(x)
    return low.item(), high.item()
