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
