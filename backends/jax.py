"""JAX-specific operations used by the portable core."""

from __future__ import annotations

import jax


def stop_gradient(x: jax.Array) -> jax.Array:
    """``x`` unchanged in value, with no gradient flowing through it."""
    return jax.lax.stop_gradient(x)


def is_tracer(x: object) -> bool:
    """True when ``x`` is an abstract value being traced (``jit``, ``grad``, ``vmap``...)."""
    return isinstance(x, jax.core.Tracer)


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,): the forward recursion as one ``lax.scan`` over the frames.

    The step is anyloss's generic one (see :mod:`anyloss.ctc`), so ``jax.jit``
    compiles it once whatever ``T``; gradients follow torch's convention.
    """
    import jax.numpy as jnp

    from anyloss import ctc as _ctc

    n_frames, batch, n_classes = log_probs.shape
    ext, skip = _ctc.extended_labels(jnp, targets, target_lengths, max_target_length, blank,
                                     n_classes)
    n_states = ext.shape[1]
    emissions = jnp.take_along_axis(
        log_probs, jnp.broadcast_to(ext[None], (n_frames, batch, n_states)), axis=2
    )
    no_skip = jnp.asarray(-jnp.inf, dtype=log_probs.dtype)

    def step(alpha, frame):
        t, emission = frame
        two_back = jnp.where(skip, _ctc._shift(jnp, alpha, 2), no_skip)
        new = _ctc._logsumexp3(jnp, alpha, _ctc._shift(jnp, alpha, 1), two_back) + emission
        return jnp.where((t < input_lengths)[:, None], new, alpha), None

    start = _ctc._start(jnp, batch, n_states, log_probs.dtype)
    alpha, _ = jax.lax.scan(step, start, (jnp.arange(n_frames), emissions))
    losses = -_ctc._final_log_likelihood(jnp, alpha, target_lengths)
    losses = losses + _ctc._torch_gradient_convention(jnp, log_probs, input_lengths)
    if zero_infinity:
        losses = jnp.where(losses == jnp.inf, jnp.zeros_like(losses), losses)
    return losses


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum, by ``jax.vjp`` of :func:`ctc_loss`."""
    import jax.numpy as jnp

    def losses_of(lp):
        return ctc_loss(lp, targets, input_lengths, target_lengths, blank=blank,
                        zero_infinity=zero_infinity, max_target_length=max_target_length)

    losses, pullback = jax.vjp(losses_of, log_probs)
    (grad,) = pullback(jnp.ones_like(losses))
    # torch's gradient of an infinite loss (zero_infinity off) is nan on every frame it covers.
    frames = jnp.arange(log_probs.shape[0])[:, None] < input_lengths[None, :]
    infinite = (losses == jnp.inf)[None, :] & frames
    return losses, jnp.where(infinite[:, :, None], jnp.nan, grad)


def _class_mask(target, value, above=False):
    """``target == value`` (or ``>= value``), constant where ``value`` is outside the dtype."""
    import jax.numpy as jnp

    info = jnp.iinfo(target.dtype)
    if above:
        return target >= value if value <= info.max else jnp.zeros(target.shape, bool)
    return target == value if info.min <= value <= info.max else jnp.zeros(target.shape, bool)


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """Class-index cross entropy as ``logsumexp(x) - x[y]``: a gather, no one-hot over C.

    The maximum is subtracted (outside the gradient) before the exponentials and
    from the gathered logit, so the rounding is that of the generic log-softmax;
    the smoothing term sums the shifted logits, which are all <= 0, so it has no
    cancellation. Works under ``jax.jit``; probability targets decline.
    """
    import jax.numpy as jnp

    if not jnp.issubdtype(target.dtype, jnp.integer) or input.shape[input.ndim > 1] == 0:
        return NotImplemented
    # One compiled kernel per shape and options, also when called eagerly.
    return _cross_entropy_jit(input, target, weight, ignore_index=ignore_index,
                              reduction=reduction, label_smoothing=label_smoothing)


def _cross_entropy_formula(input, target, weight, *, ignore_index, reduction, label_smoothing):
    import jax.numpy as jnp

    dtype = input.dtype
    x = input.astype(jnp.float32) if dtype in (jnp.float16, jnp.bfloat16) else input
    axis = 0 if x.ndim == 1 else 1
    n_classes = x.shape[axis]
    peak = jnp.max(x, axis=axis, keepdims=True)
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    shifted = x - peak
    log_total = jnp.log(jnp.sum(jnp.exp(shifted), axis=axis))
    ignored = _class_mask(target, ignore_index)
    in_range = (target >= 0) & ~_class_mask(target, n_classes, above=True)
    usable = in_range & ~ignored
    safe = jnp.where(usable, target, 0).astype(jnp.int32 if n_classes < 2**31 else jnp.int64)
    picked = jnp.squeeze(jnp.take_along_axis(x, jnp.expand_dims(safe, axis), axis=axis), axis)
    nll = log_total - (picked - jnp.squeeze(peak, axis))
    if weight is None:
        target_weight = jnp.ones_like(nll)
        loss = nll
    else:
        weight = weight.astype(x.dtype)
        target_weight = weight[safe]
        loss = target_weight * nll
    if label_smoothing > 0:
        if weight is None:
            spread = n_classes * log_total - jnp.sum(shifted, axis=axis)
        else:
            along = weight.reshape((n_classes,) + (1,) * (x.ndim - axis - 1))
            spread = jnp.sum(weight) * log_total - jnp.sum(shifted * along, axis=axis)
        loss = (1.0 - label_smoothing) * loss + (label_smoothing / n_classes) * spread
    loss = jnp.where(ignored, 0.0, jnp.where(in_range, loss, jnp.nan))
    if reduction == "none":
        return loss.astype(dtype)
    total = jnp.sum(loss)
    if reduction == "sum":
        return total.astype(dtype)
    # A plain 0/0 when nothing counts: nan, and torch's gradient (0 on ignored targets,
    # nan on targets of weight 0).
    denominator = jnp.sum(jnp.where(usable, target_weight, 0.0))
    return (total / denominator).astype(dtype)


_cross_entropy_jit = jax.jit(_cross_entropy_formula,
                             static_argnames=("ignore_index", "reduction", "label_smoothing"))


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """The loss and, by ``jax.vjp`` of :func:`cross_entropy`, its gradient wrt ``input``."""
    import jax.numpy as jnp

    if not jnp.issubdtype(target.dtype, jnp.integer) or input.shape[input.ndim > 1] == 0:
        return NotImplemented

    def loss_of(x):
        return cross_entropy(x, target, weight, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)

    loss, pullback = jax.vjp(loss_of, input)
    (grad,) = pullback(jnp.ones_like(loss))
    return loss, grad


# --- building blocks of the generic formulas (looked up by anyloss._array.native) --------
# Only kernels whose gradients follow torch's conventions: jax.nn.relu (gradient 0 at 0)
# and jax.scipy.special.xlogy (nan gradient at x = y = 0) are left to the portable code.

BUILDING_BLOCKS = {
    "log_sigmoid": jax.nn.log_sigmoid,
    "softplus": jax.nn.softplus,
    "logsumexp": lambda x, axis, keepdims: jax.nn.logsumexp(x, axis=axis, keepdims=keepdims),
    "positive_part": jax.nn.relu,  # gradient 0 at 0
}
