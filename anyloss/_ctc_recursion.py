"""CTC's recursions in the array API: blank-extended labels, forward and backward variables.

The shared core of :mod:`anyloss.ctc` (the written-once path) and of the backends
that reuse its pieces (:mod:`anyloss.backends.jax` scans :func:`logsumexp3` over
the frames; the NumPy and Dask backends build their labels with
:func:`extended_labels` and :func:`padded_targets`). Everything here is written
against the array API and takes the namespace ``xp`` first; the algorithm is that
of Graves et al. (2006), section 4.1, summarised in :mod:`anyloss.ctc`.

Shapes: ``lp`` (log-probabilities) ``(T, N, C)``; ``il``, ``tl`` (input and target
lengths) ``(N,)``; targets padded ``(N, S)`` or concatenated
``(sum(target_lengths),)``; ``2S + 1`` states per sample.
"""

from __future__ import annotations

import math
from typing import Any

from anyloss._array import stop_gradient
from anyloss._ops import slope_term, take_along_axis

__all__ = [
    "padded_targets",
    "extended_labels",
    "start",
    "logsumexp3",
    "shift",
    "unshift",
    "forward_variables",
    "final_log_likelihood",
    "torch_gradient_convention",
    "alphas_at_input_length",
    "losses",
    "losses_and_grad",
]


def padded_targets(xp, targets, tl, max_target, blank, starts=None) -> Any:
    """(N, max_target) labels; positions at or past a sample's target length hold ``blank``.

    Concatenated (1-d) targets hold sample n's labels at
    ``targets[starts[n] : starts[n] + tl[n]]``; ``starts`` defaults to the lengths
    of the samples before it (``cumulative_sum(tl) - tl``), and is given where
    ``targets`` holds the labels of more samples than ``tl`` (a Dask chunk).
    """
    batch = tl.shape[0]
    positions = xp.arange(max_target, dtype=tl.dtype)
    valid = positions[None, :] < tl[:, None]
    if targets.ndim == 2:
        return xp.where(valid, targets[:, :max_target], xp.asarray(blank, dtype=targets.dtype))
    if max_target == 0 or targets.shape[0] == 0:
        return xp.full((batch, max_target), blank, dtype=targets.dtype)
    if starts is None:
        starts = xp.cumulative_sum(tl) - tl
    index = starts[:, None] + positions[None, :]  # >= 0; kept below S by where (see below)
    index = xp.where(index > targets.shape[0] - 1, targets.shape[0] - 1, index)
    gathered = xp.reshape(xp.take(targets, xp.reshape(index, (-1,)), axis=0), (batch, max_target))
    return xp.where(valid, gathered, xp.asarray(blank, dtype=targets.dtype))


def extended_labels(xp, targets, tl, max_target, blank, n_classes) -> tuple[Any, Any]:
    """The blank-extended labels ``l'`` (N, 2S + 1) and where a skip over a blank is allowed.

    ``skip[n, s]`` is true for a label state whose label differs from the one two
    states back (a repeat needs a blank between the two labels).
    """
    labels = padded_targets(xp, targets, tl, max_target, blank)
    # clipped to [0, C - 1] by where, here and above: array-api-compat's clip asks
    # math.isnan of its bounds, which torch.compile cannot trace for a symbolic size
    labels = xp.where(labels < 0, 0, xp.where(labels > n_classes - 1, n_classes - 1, labels))
    batch = tl.shape[0]
    blanks = xp.full((batch, max_target), blank, dtype=labels.dtype)
    interleaved = xp.reshape(xp.stack([blanks, labels], axis=-1), (batch, 2 * max_target))
    ext = xp.concat([interleaved, xp.full((batch, 1), blank, dtype=labels.dtype)], axis=1)
    before = xp.concat([xp.full((batch, 2), -1, dtype=labels.dtype), ext[:, :-2]], axis=1)
    odd = (xp.arange(2 * max_target + 1) % 2) == 1
    return ext, odd[None, :] & (ext != before)


def start(xp, batch: int, n_states: int, dtype) -> Any:
    """The forward variables before the first frame: log 1 in state 0, log 0 elsewhere."""
    first = xp.arange(n_states)[None, :] == 0
    return xp.where(first, xp.zeros((batch, n_states), dtype=dtype),
                    xp.full((batch, n_states), -math.inf, dtype=dtype))


def logsumexp3(xp, a, b, c) -> Any:
    """``log(exp(a) + exp(b) + exp(c))`` elementwise; -inf for three -inf (with a zero,
    finite gradient)."""
    peak = stop_gradient(xp.maximum(xp.maximum(a, b), c))
    peak = xp.where(xp.isfinite(peak), peak, 0.0)
    total = xp.exp(a - peak) + xp.exp(b - peak) + xp.exp(c - peak)
    positive = total > 0
    return xp.where(positive, xp.log(xp.where(positive, total, 1.0)) + peak, -math.inf)


def shift(xp, x, by: int) -> Any:
    """``x`` moved ``by`` states to the right along axis 1, filled with -inf."""
    if by >= x.shape[1]:
        return xp.full(x.shape, -math.inf, dtype=x.dtype)
    fill = xp.full((x.shape[0], by), -math.inf, dtype=x.dtype)
    return xp.concat([fill, x[:, :-by]], axis=1)


def forward_variables(xp, lp, ext, skip, il) -> Any:
    """Final forward variables (N, 2S + 1), each frozen at its sample's input length."""
    n_frames, batch = lp.shape[0], lp.shape[1]
    n_states = ext.shape[1]
    emissions = take_along_axis(
        xp, lp, xp.broadcast_to(ext[None, :, :], (n_frames, batch, n_states)), axis=2
    )
    alpha = start(xp, batch, n_states, lp.dtype)
    no_skip = xp.asarray(-math.inf, dtype=lp.dtype)
    for t in range(n_frames):
        two_back = xp.where(skip, shift(xp, alpha, 2), no_skip)
        new = logsumexp3(xp, alpha, shift(xp, alpha, 1), two_back) + emissions[t, ...]
        alpha = xp.where((t < il)[:, None], new, alpha)
    return alpha


def final_log_likelihood(xp, alpha, tl) -> Any:
    """``logsumexp(alpha[2U], alpha[2U - 1])`` per sample (just ``alpha[0]`` for U = 0)."""
    last = 2 * tl
    end = take_along_axis(xp, alpha, last[:, None], axis=1)[:, 0]
    before = take_along_axis(xp, alpha, xp.where(last > 0, last - 1, 0)[:, None], axis=1)[:, 0]
    before = xp.where(tl > 0, before, -math.inf)
    return logsumexp3(xp, end, before, xp.full_like(end, -math.inf))


def torch_gradient_convention(xp, result, lp, il, zero_infinity: bool) -> Any:
    """``result`` (the losses, (N,)) with torch's gradient rather than the recursion's own.

    Zero is added in value; its gradient adds ``exp(log_probs)`` on the frames below
    the input length, which turns the exact partial derivative into torch's (see the
    module docstring), so that autodiff through the generic formula agrees with
    torch. A sample whose loss is infinite (no alignment fits) gets torch's gradient
    too, nan on those frames, unless ``zero_infinity`` zeroes it.
    """
    frames = xp.arange(lp.shape[0])
    inside = (frames[:, None] < il[None, :])[:, :, None]
    probs = xp.exp(stop_gradient(lp))
    slope = xp.where(inside & xp.isfinite(probs), probs, 0.0)
    if not zero_infinity:
        infinite = (stop_gradient(result) == math.inf)[None, :, None]
        slope = xp.where(inside & infinite, math.nan, slope)
    return result + xp.sum(xp.sum(slope_term(xp, lp, slope), axis=2), axis=0)


def losses(xp, lp, targets, il, tl, max_target, blank, zero_infinity, *,
           torch_gradient: bool) -> Any:
    """Per-sample losses (N,) by the forward recursion, written in the array API.

    ``lp`` is ``(T, N, C)``; ``targets`` padded ``(N, S)`` or concatenated; ``il``
    and ``tl`` ``(N,)``. With ``torch_gradient``, the losses carry
    :func:`torch_gradient_convention`, so that autodiff through them gives
    torch's gradient.
    """
    ext, skip = extended_labels(xp, targets, tl, max_target, blank, lp.shape[2])
    alpha = forward_variables(xp, lp, ext, skip, il)
    result = -final_log_likelihood(xp, alpha, tl)
    if torch_gradient:
        result = torch_gradient_convention(xp, result, lp, il, zero_infinity)
    if zero_infinity:
        result = xp.where(result == math.inf, xp.zeros_like(result), result)
    return result


def losses_and_grad(xp, lp, targets, il, tl, max_target, blank,
                    zero_infinity) -> tuple[Any, Any]:
    """Per-sample losses (N,) and torch's gradient of their sum (T, N, C), by the
    alpha-beta recursion written in the array API (arguments as in :func:`losses`).

    The gradient is torch's convention (see :mod:`anyloss.ctc`), zero past each
    input length, nan on every frame of an infinite loss, and zero for the
    infinite losses that ``zero_infinity`` zeroes.
    """
    n_frames, batch, n_classes = lp.shape
    ext, skip = extended_labels(xp, targets, tl, max_target, blank, n_classes)
    n_states = ext.shape[1]
    emissions = take_along_axis(
        xp, lp, xp.broadcast_to(ext[None, :, :], (n_frames, batch, n_states)), axis=2
    )
    state = xp.arange(n_states)
    no_skip = xp.asarray(-math.inf, dtype=lp.dtype)
    minus_inf = xp.full((batch, n_states), -math.inf, dtype=lp.dtype)

    alphas = []
    alpha = start(xp, batch, n_states, lp.dtype)
    for t in range(n_frames):
        two_back = xp.where(skip, shift(xp, alpha, 2), no_skip)
        alpha = logsumexp3(xp, alpha, shift(xp, alpha, 1), two_back) + emissions[t, ...]
        alphas.append(alpha)

    # beta_t(s): log-probability of frames t..T'-1 given state s at frame t, emission at t included.
    last = xp.astype(2 * tl, ext.dtype)
    is_end = (state[None, :] == last[:, None]) | (
        (state[None, :] == last[:, None] - 1) & (tl[:, None] > 0))
    skip_next = xp.concat([skip[:, 2:], xp.zeros((batch, 2), dtype=xp.bool)], axis=1)
    beta = minus_inf
    grad_parts = [None] * n_frames
    probs = xp.exp(lp)
    one_hot = xp.astype(ext[:, :, None] == xp.arange(n_classes, dtype=ext.dtype)[None, None, :],
                        lp.dtype)
    ll = final_log_likelihood(xp, alphas_at_input_length(xp, alphas, il), tl)
    possible = ll > -math.inf
    ll_or_0 = xp.where(possible, ll, 0.0)
    for t in reversed(range(n_frames)):
        at_end = (t == il - 1)[:, None]
        inside = (t < il - 1)[:, None]
        ahead1 = unshift(xp, beta, 1)
        ahead2 = xp.where(skip_next, unshift(xp, beta, 2), no_skip)
        carried = logsumexp3(xp, beta, ahead1, ahead2)
        beta = xp.where(at_end, xp.where(is_end, emissions[t, ...], -math.inf),
                        xp.where(inside, carried + emissions[t, ...], minus_inf))
        post = xp.exp(alphas[t] + beta - emissions[t, ...] - ll_or_0[:, None])  # alpha*beta/p/P
        per_class = xp.sum(post[:, :, None] * one_hot, axis=1)  # (N, C)
        # torch's gradient of an infinite loss is nan on every class of every frame.
        frame = xp.where(possible[:, None], probs[t, ...] - per_class, math.nan)
        frame = xp.where((t < il)[:, None], frame, 0.0)
        grad_parts[t] = frame
    grad = xp.stack(grad_parts, axis=0)
    losses = -ll
    if zero_infinity:
        infinite = losses == math.inf
        losses = xp.where(infinite, 0.0, losses)
        grad = xp.where(infinite[None, :, None], 0.0, grad)
    return losses, grad


def alphas_at_input_length(xp, alphas, il) -> Any:
    """The forward variables at each sample's last frame (frame il - 1); the start for il = 0."""
    batch, n_states = alphas[0].shape
    result = start(xp, batch, n_states, alphas[0].dtype)
    for t, alpha in enumerate(alphas):
        result = xp.where((t == il - 1)[:, None], alpha, result)
    return result


def unshift(xp, x, by: int) -> Any:
    """``x`` moved ``by`` states to the left along axis 1, filled with -inf."""
    if by >= x.shape[1]:
        return xp.full(x.shape, -math.inf, dtype=x.dtype)
    fill = xp.full((x.shape[0], by), -math.inf, dtype=x.dtype)
    return xp.concat([x[:, by:], fill], axis=1)
