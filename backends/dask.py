"""Dask kernels: the NumPy kernels mapped over chunks of the batch, lazily.

Each chunk calls the NumPy backend's kernels directly (not anyloss's public
functions, whose checks ran once on the whole call), or, where one declines,
the same recursion written in the array API (:mod:`anyloss._ctc_recursion`).
A chunk's kernel runs on one thread (:func:`anyloss._threads.single_threaded`):
Dask's scheduler already runs a chunk per core.
"""

from __future__ import annotations

import math

import array_api_compat.numpy as npx
import dask.array as da
import numpy as np

from anyloss import _ctc_recursion
from anyloss._reduction import divide_or_nan
from anyloss._threads import single_threaded
from anyloss.backends.numpy import cross_entropy as numpy_cross_entropy
from anyloss.backends.numpy import ctc as numpy_ctc
from anyloss.backends.numpy import linear_cross_entropy as numpy_linear


def _batch_chunked(log_probs, targets, input_lengths, target_lengths):
    """The arrays rechunked so that each block holds whole samples (all frames, classes, labels)."""
    log_probs = log_probs.rechunk({0: -1, 2: -1})
    batch_chunks = log_probs.chunks[1]
    targets = targets.rechunk((batch_chunks, -1))
    return (log_probs, targets, input_lengths.rechunk((batch_chunks,)),
            target_lengths.rechunk((batch_chunks,)))


def _block_options(targets, target_lengths, blank, zero_infinity):
    longest = int(target_lengths.max()) if target_lengths.size else 0
    return {"blank": blank, "zero_infinity": zero_infinity,
            "max_target_length": min(longest, targets.shape[1])}


def _ctc_blocks(log_probs, targets, input_lengths, target_lengths):
    """The blockwise arguments of a CTC call, one block per batch chunk.

    Padded (2-d) targets are chunked like the batch. Concatenated (1-d) targets cannot
    be cut by sample without the lengths' values, so every block receives them whole
    (they are small: the labels of the batch), with the lazy offset of each of its
    samples, ``cumsum(target_lengths) - target_lengths``, and gathers its own labels.
    """
    if targets.ndim == 2:
        arrays = _batch_chunked(log_probs, targets, input_lengths, target_lengths)
        return (arrays[0], "tnc", arrays[1], "ns", arrays[2], "n", arrays[3], "n")
    log_probs = log_probs.rechunk({0: -1, 2: -1})
    batch_chunks = log_probs.chunks[1]
    starts = (da.cumsum(target_lengths) - target_lengths).rechunk((batch_chunks,))
    return (log_probs, "tnc", targets.rechunk(-1), "m", starts, "n",
            input_lengths.rechunk((batch_chunks,)), "n",
            target_lengths.rechunk((batch_chunks,)), "n")


def _numpy_block(compute):
    """A blockwise function calling ``compute(lp, padded_targets, il, tl)`` on a block of
    either argument layout of :func:`_ctc_blocks` (padded targets, or concatenated
    labels with the samples' offsets)."""

    @single_threaded
    def block(lp, tg, *rest):
        if len(rest) == 3:  # concatenated labels, offsets, input and target lengths
            starts, il, tl = rest
            width = int(tl.max()) if tl.size else 0
            tg = _ctc_recursion.padded_targets(npx, tg, tl, width, 0, starts=starts)
        else:
            il, tl = rest
        return compute(lp, tg, il, tl)

    return block


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) as a lazy Dask array, one NumPy kernel call per batch chunk.

    Padded (2-d) or concatenated (1-d) targets; nothing is computed here.
    """

    def compute(lp, tg, il, tl):
        return numpy_ctc.ctc_loss(lp, tg, il, tl,
                                      **_block_options(tg, tl, blank, zero_infinity))

    args = _ctc_blocks(log_probs, targets, input_lengths, target_lengths)
    return da.blockwise(_numpy_block(compute), "n", *args, dtype=log_probs.dtype,
                        concatenate=True)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and their gradient (T, N, C), lazily, by batch chunk.

    One kernel call per chunk gives both: its block is the gradient with one more
    class column, whose first frame holds the chunk's losses, and the two results
    are slices of it (computed together, as in ``dask.compute(loss, grad)``, each
    chunk runs once).
    """
    n_classes = log_probs.shape[2]

    def compute(lp, tg, il, tl):
        options = _block_options(tg, tl, blank, zero_infinity)
        result = numpy_ctc.ctc_loss_and_grad(lp, tg, il, tl, **options)
        if result is NotImplemented:  # no numba: the alpha-beta recursion in the array API
            result = _ctc_recursion.losses_and_grad(
                npx, lp, tg, il, tl, options["max_target_length"], blank, zero_infinity)
        losses, grad = result
        both = np.zeros(grad.shape[:2] + (n_classes + 1,), dtype=grad.dtype)
        both[:, :, :n_classes] = grad
        both[0, :, n_classes] = losses
        return both

    args = _ctc_blocks(log_probs, targets, input_lengths, target_lengths)
    both = da.blockwise(_numpy_block(compute), "tnc", *args, dtype=log_probs.dtype,
                        concatenate=True, adjust_chunks={"c": lambda c: c + 1})
    return both[0, :, n_classes], both[:, :, :n_classes]


# --- cross entropy: the NumPy blocked pass over chunks of the non-class axes -------------

_CE_LETTERS = "abdefghijklmopqrstuvwxyz"  # axis names for blockwise; 'n' and 'c' are taken


def _ce_chunked(input, target, weight):
    """Input with one chunk along the class axis, the target chunked like the other axes,
    the blockwise index strings, and the weight (whole) with its arguments."""
    x = input.rechunk({1: -1})
    t = target.rechunk((x.chunks[0],) + x.chunks[2:])
    inner = _CE_LETTERS[: x.ndim - 2]
    x_index, t_index = "nc" + inner, "n" + inner
    w_args = () if weight is None else (weight.rechunk(-1), "c")
    return x, x_index, t, t_index, w_args


def _ce_declines(input, target) -> bool:
    return (input.ndim < 2 or not np.issubdtype(target.dtype, np.integer)
            or any(math.isnan(n) for n in input.shape) or input.shape[1] == 0)


def _ce_elements(input, target, weight, ignore_index, label_smoothing):
    """Lazy unreduced losses (float64, target's shape) and their 'mean' weights."""
    x, x_index, t, t_index, w_args = _ce_chunked(input, target, weight)
    n_classes = input.shape[1]

    @single_threaded
    def losses(xb, tb, wb=None):
        return numpy_cross_entropy.cross_entropy_elements(
            xb, tb, wb, ignore_index=ignore_index, label_smoothing=label_smoothing)[0]

    def weights(tb, wb=None):
        return numpy_cross_entropy.cross_entropy_targets(tb, wb, n_classes, ignore_index)[3]

    elements = da.blockwise(losses, t_index, x, x_index, t, t_index, *w_args,
                            dtype="float64", concatenate=True)
    mean_weights = da.blockwise(weights, t_index, t, t_index, *w_args, dtype="float64",
                                concatenate=True)
    return elements, mean_weights


def _ce_reduce(elements, mean_weights, reduction, dtype):
    if reduction == "none":
        return elements.astype(dtype)
    total = elements.sum()
    if reduction == "sum":
        return total.astype(dtype)
    return divide_or_nan(da, total, mean_weights.sum()).astype(dtype)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """Class-index cross entropy as a lazy Dask array: the NumPy blocked pass per chunk.

    The class axis is gathered into one chunk; the batch and spatial axes keep
    their chunks. Nothing is computed here. Class probabilities of a 2-d or
    K-dimensional input take :func:`_probability_cross_entropy`; 1-d inputs, other
    probability targets and unknown chunk sizes decline.
    """
    if _probability_rows(input, target):
        return _probability_cross_entropy(input, target, weight, reduction, label_smoothing)
    if _ce_declines(input, target):
        return NotImplemented
    elements, mean_weights = _ce_elements(input, target, weight, ignore_index, label_smoothing)
    return _ce_reduce(elements, mean_weights, reduction, input.dtype)


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """Lazy ``(loss, grad)``; each chunk's gradient comes from the NumPy pass, scaled by
    the whole array's 'mean' denominator (a lazy scalar handed to every chunk). Class
    probabilities: :func:`_probability_cross_entropy`, one kernel call per chunk for
    both."""
    if _probability_rows(input, target):
        return _probability_cross_entropy(input, target, weight, reduction, label_smoothing,
                                          gradient=True)
    if _ce_declines(input, target):
        return NotImplemented
    elements, mean_weights = _ce_elements(input, target, weight, ignore_index, label_smoothing)
    x, x_index, t, t_index, w_args = _ce_chunked(input, target, weight)
    denominator = mean_weights.sum() if reduction == "mean" else da.ones((), dtype="float64")
    block_reduction = "mean" if reduction == "mean" else "sum"

    @single_threaded
    def grad_block(xb, tb, d, wb=None):
        return numpy_cross_entropy.blocked_cross_entropy_and_grad(
            xb, tb, wb, ignore_index=ignore_index, reduction=block_reduction,
            label_smoothing=label_smoothing, denominator=d)[1]

    grad = da.blockwise(grad_block, x_index, x, x_index, t, t_index, denominator, (),
                        *w_args, dtype=input.dtype, concatenate=True)
    return _ce_reduce(elements, mean_weights, reduction, input.dtype), grad


def _probability_rows(input, target) -> bool:
    """Whether :func:`_probability_cross_entropy` takes the call: class probabilities (a
    floating target of the input's shape) of an input ``(N, C)`` or ``(N, C, d1, ...,
    dK)`` of known chunk sizes, ``C > 0``."""
    return (input.ndim >= 2 and np.issubdtype(target.dtype, np.floating)
            and tuple(target.shape) == tuple(input.shape)
            and not any(math.isnan(n) for n in input.shape) and input.shape[1] > 0)


def _probability_block(label_smoothing, scale):
    """The blockwise function of :func:`_probability_cross_entropy`: a chunk's losses
    (float64, ``(n, d1, ...)``), or, for a gradient ``scale``, its gradient of ``scale *
    sum(losses)`` with the losses as one more class (``(n, C + 1, d1, ...)``, the input's
    dtype). The NumPy kernels
    (:func:`anyloss.backends.numpy.cross_entropy.probability_losses`) where they answer,
    else the written-once formula on the chunk."""

    @single_threaded
    def block(xb, tb, wb=None):
        result = numpy_cross_entropy.probability_losses(
            xb, tb, wb, label_smoothing=label_smoothing, gradient_scale=scale)
        if result is NotImplemented:  # no numba, or a row that the formula answers
            from anyloss import classification

            losses = classification._cross_entropy_probabilities(
                npx, xb, tb, wb, "none", label_smoothing).astype(np.float64)
            grad = None if scale is None else (classification._probabilities_grad(
                npx, xb, tb, wb, "sum", label_smoothing) * scale).astype(xb.dtype)
        else:
            losses, grad = result
            losses = losses.reshape(xb.shape[:1] + xb.shape[2:])
        if grad is None:
            return losses
        n, c, *positions = xb.shape
        both = np.empty((n, c + 1, *positions), dtype=xb.dtype)
        both[:, :-1] = grad
        both[:, -1] = losses
        return both

    return block


def _probability_cross_entropy(input, target, weight, reduction, label_smoothing,
                               gradient=False):
    """Cross entropy of class probabilities of an input ``(N, C, ...)``, lazily: one NumPy
    kernel call per chunk (the class axis gathered into one chunk, the batch and spatial
    axes keeping theirs, the target chunked as the input), the losses in float64, summed
    over the chunks; ``'mean'`` divides by the number of losses, ``N d1 ... dK``. With
    ``gradient``, ``(loss, grad)``: the chunk's call gives both (its gradient with the
    losses as one more class, which the two results slice: computed together, each chunk
    runs once)."""
    x = input.rechunk({1: -1})
    t = target.rechunk(x.chunks)
    w_args = () if weight is None else (weight.rechunk(-1), "c")
    spatial = "defghijklmopqrstuvwxyz"[:input.ndim - 2]  # neither n nor c
    x_index, loss_index = "nc" + spatial, "n" + spatial
    c = input.shape[1]
    count = math.prod(input.shape) // c
    if not gradient:
        losses = da.blockwise(_probability_block(label_smoothing, None), loss_index, x,
                              x_index, t, x_index, *w_args, concatenate=True,
                              meta=np.empty((0,) * len(loss_index), np.float64))
        grad = None
    else:
        scale = 1.0 / count if reduction == "mean" and count else 1.0
        both = da.blockwise(_probability_block(label_smoothing, scale), x_index, x, x_index,
                            t, x_index, *w_args, concatenate=True,
                            adjust_chunks={"c": lambda k: k + 1},
                            meta=np.empty((0,) * len(x_index), input.dtype))
        losses, grad = both[:, c].astype("float64"), both[:, :c]
    if reduction == "none":
        loss = losses.astype(input.dtype)
    elif reduction == "sum":
        loss = losses.sum().astype(input.dtype)
    else:
        loss = divide_or_nan(da, losses.sum(), float(count)).astype(input.dtype)
    return loss if grad is None else (loss, grad)


# --- linear_cross_entropy: the NumPy kernel over row chunks ------------------------------


def _whole(a):
    """``a`` as one chunk (the weight and bias: every row chunk needs all of them)."""
    return None if a is None else a.rechunk(-1)


def _lce_declines(input, linear_weight, target) -> bool:
    shapes = (*input.shape, *linear_weight.shape, *target.shape)
    return (input.ndim != 2 or linear_weight.ndim != 2 or target.ndim != 1
            or not np.issubdtype(target.dtype, np.integer)
            or any(math.isnan(n) for n in shapes) or linear_weight.shape[0] == 0)


def _lce_elements(input, linear_weight, target, linear_bias, weight, ignore_index,
                  label_smoothing, options):
    """Lazy per-row losses and 'mean' weights (float64, (N,)), one NumPy kernel call per
    row chunk; the weight matrix is one chunk, shared by every block."""
    x = input.rechunk({1: -1})
    t = target.rechunk((x.chunks[0],))
    extra = [a for a in (linear_bias, weight) if a is not None]
    has_bias = linear_bias is not None

    @single_threaded
    def block(xb, tb, wb, *rest):
        bias = rest[0] if has_bias else None
        class_weight = rest[-1] if len(rest) > has_bias else None
        losses, weights = numpy_linear.linear_cross_entropy_elements(
            xb, wb, tb, bias, class_weight, ignore_index=ignore_index,
            label_smoothing=label_smoothing, options=options)
        return np.stack([losses, weights])

    args = [x, "nd", t, "n", _whole(linear_weight), "cd"]
    for a in extra:
        args += [_whole(a), "c"]
    both = da.blockwise(block, "kn", *args, new_axes={"k": 2}, concatenate=True,
                        meta=np.empty((0, 0), dtype=np.float64))
    return both[0], both[1]


def linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
                         ignore_index, label_smoothing, options):
    """The loss as a lazy Dask array: the NumPy tiled kernel (never the whole logits)
    per row chunk of a 2-d input. Other shapes decline to the written-once path."""
    if _lce_declines(input, linear_weight, target):
        return NotImplemented
    losses, weights = _lce_elements(input, linear_weight, target, linear_bias, weight,
                                    ignore_index, label_smoothing, options)
    return _ce_reduce(losses, weights, reduction, input.dtype)


def linear_cross_entropy_and_grad(input, linear_weight, target, *, linear_bias, weight,
                                  reduction, ignore_index, label_smoothing, options):
    """Lazy ``(loss, grad_input, grad_weight, grad_bias)``: per row chunk, one call of the
    NumPy gradient kernel with the whole problem's scale (a lazy scalar from the
    targets), packed into one block (the chunk's gradient rows with its losses in an extra
    column, then its partial weight and bias gradients); the partial weight gradients of
    the chunks are summed by Dask's tree reduction."""
    if _lce_declines(input, linear_weight, target):
        return NotImplemented
    x = input.rechunk({1: -1})
    t = target.rechunk((x.chunks[0],))
    n_classes, d = linear_weight.shape
    has_bias = linear_bias is not None
    class_weight = _whole(weight)
    w_args = [] if class_weight is None else [class_weight, "c"]

    def mean_weights(tb, wb=None):
        return numpy_cross_entropy.cross_entropy_targets(tb, wb, n_classes, ignore_index)[3]

    w_y = da.blockwise(mean_weights, "n", t, "n", *w_args, dtype="float64", concatenate=True)
    total_weight = w_y.sum()

    @single_threaded
    def block(xb, tb, total, wb, *rest):
        bias = rest[0] if has_bias else None
        cw = rest[-1] if len(rest) > has_bias else None
        scale = numpy_linear.gradient_scale(float(total), reduction)
        losses, gi, gw, gb = numpy_linear.linear_cross_entropy_grads(
            xb, wb, tb, bias, cw, ignore_index=ignore_index, label_smoothing=label_smoothing,
            options=options, scale=scale)
        nb = xb.shape[0]
        out = np.empty((nb + n_classes, d + 1), dtype=xb.dtype)
        out[:nb, :d] = gi
        out[:nb, d] = losses
        out[nb:, :d] = gw
        out[nb:, d] = 0.0 if gb is None else gb
        return out

    args = [x, "nd", t, "n", total_weight, (), _whole(linear_weight), "cd"]
    if has_bias:
        args += [_whole(linear_bias), "c"]
    args += w_args
    packed = da.blockwise(block, "nd", *args, concatenate=True, dtype=input.dtype,
                          adjust_chunks={"n": lambda nb: nb + n_classes, "d": lambda _: d + 1},
                          meta=np.empty((0, 0), dtype=input.dtype))
    blocks = [packed.blocks[i] for i in range(packed.numblocks[0])]
    rows = x.chunks[0]
    grad_input = da.concatenate([b[:nb, :d] for b, nb in zip(blocks, rows, strict=True)])
    losses = da.concatenate([b[:nb, d] for b, nb in zip(blocks, rows, strict=True)])
    tails = da.stack([b[nb:] for b, nb in zip(blocks, rows, strict=True)]).sum(axis=0)
    grad_weight = tails[:, :d]
    grad_bias = tails[:, d] if has_bias else None
    loss = _ce_reduce(losses.astype("float64"), w_y, reduction, input.dtype)
    return loss, grad_input, grad_weight, grad_bias
