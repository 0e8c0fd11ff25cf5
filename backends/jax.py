"""JAX kernels: the primitives the standard lacks, CTC as one ``lax.scan``, jitted cross
entropy, and JAX's own building blocks.

Every function here is the target of a record of :mod:`anyloss._registry`,
declared beside the anyloss function it stands in for. The recursions and
formulas are anyloss's own (:mod:`anyloss._ctc_recursion`,
:mod:`anyloss._class_index`), compiled by JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from anyloss import _ctc_recursion as recursion
from anyloss._class_index import class_index_loss
from anyloss._ops import log_softmax

# --- primitives ------------------------------------------------------------------------------


def stop_gradient(x: jax.Array) -> jax.Array:
    """``x`` unchanged in value, with no gradient flowing through it."""
    return jax.lax.stop_gradient(x)


def is_tracer(x: object) -> bool:
    """True when ``x`` is an abstract value being traced (``jit``, ``grad``, ``vmap``...)."""
    return isinstance(x, jax.core.Tracer)


# --- CTC --------------------------------------------------------------------------------------


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,): the forward recursion as one ``lax.scan`` over the frames.

    The step is anyloss's generic one (:mod:`anyloss._ctc_recursion`), so
    ``jax.jit`` compiles it once whatever ``T``; gradients follow torch's convention.
    """
    n_frames, batch, n_classes = log_probs.shape
    ext, skip = recursion.extended_labels(jnp, targets, target_lengths, max_target_length,
                                          blank, n_classes)
    n_states = ext.shape[1]
    emissions = jnp.take_along_axis(
        log_probs, jnp.broadcast_to(ext[None], (n_frames, batch, n_states)), axis=2
    )
    no_skip = jnp.asarray(-jnp.inf, dtype=log_probs.dtype)

    def step(alpha, frame):
        t, emission = frame
        two_back = jnp.where(skip, recursion.shift(jnp, alpha, 2), no_skip)
        new = recursion.logsumexp3(jnp, alpha, recursion.shift(jnp, alpha, 1), two_back)
        return jnp.where((t < input_lengths)[:, None], new + emission, alpha), None

    first = recursion.start(jnp, batch, n_states, log_probs.dtype)
    alpha, _ = jax.lax.scan(step, first, (jnp.arange(n_frames), emissions))
    losses = -recursion.final_log_likelihood(jnp, alpha, target_lengths)
    losses = losses + recursion.torch_gradient_convention(jnp, log_probs, input_lengths)
    if zero_infinity:
        losses = jnp.where(losses == jnp.inf, jnp.zeros_like(losses), losses)
    return losses


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum, by ``jax.vjp`` of :func:`ctc_loss`."""

    def losses_of(lp):
        return ctc_loss(lp, targets, input_lengths, target_lengths, blank=blank,
                        zero_infinity=zero_infinity, max_target_length=max_target_length)

    losses, pullback = jax.vjp(losses_of, log_probs)
    (grad,) = pullback(jnp.ones_like(losses))
    # torch's gradient of an infinite loss (zero_infinity off) is nan on every frame it covers.
    frames = jnp.arange(log_probs.shape[0])[:, None] < input_lengths[None, :]
    infinite = (losses == jnp.inf)[None, :] & frames
    return losses, jnp.where(infinite[:, :, None], jnp.nan, grad)


# --- cross entropy ----------------------------------------------------------------------------


def _declines(input, target) -> bool:
    """Probability targets and inputs with no class take the generic path."""
    return not jnp.issubdtype(target.dtype, jnp.integer) or input.shape[input.ndim > 1] == 0


def _class_index_cross_entropy(input, target, weight, *, ignore_index, reduction,
                               label_smoothing):
    """anyloss's class-index formula (16-bit floats computed in float32), to be jitted."""
    dtype = input.dtype
    if dtype in (jnp.float16, jnp.bfloat16):
        input = input.astype(jnp.float32)
        weight = None if weight is None else weight.astype(jnp.float32)
    log_probs = log_softmax(jnp, input, axis=0 if input.ndim == 1 else 1)
    loss = class_index_loss(jnp, log_probs, target, weight, ignore_index, reduction,
                            label_smoothing, plain=False)
    return loss.astype(dtype)


_cross_entropy_jit = jax.jit(_class_index_cross_entropy,
                             static_argnames=("ignore_index", "reduction", "label_smoothing"))


def cross_entropy(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """Class-index cross entropy: anyloss's formula compiled by ``jax.jit``, once per
    shape and options (also when called eagerly: one dispatch instead of dozens).

    Works under an outer ``jax.jit``; probability targets decline.
    """
    if _declines(input, target):
        return NotImplemented
    return _cross_entropy_jit(input, target, weight, ignore_index=ignore_index,
                              reduction=reduction, label_smoothing=label_smoothing)


def cross_entropy_and_grad(input, target, weight, *, ignore_index, reduction, label_smoothing):
    """The loss and, by ``jax.vjp`` of :func:`cross_entropy`, its gradient wrt ``input``."""
    if _declines(input, target):
        return NotImplemented

    def loss_of(x):
        return cross_entropy(x, target, weight, ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)

    loss, pullback = jax.vjp(loss_of, input)
    (grad,) = pullback(jnp.ones_like(loss))
    return loss, grad


# --- building blocks of the generic formulas (stage 'block') ----------------------------------
# Only kernels whose gradients follow torch's conventions: jax.nn.relu (gradient 0 at 0)
# and jax.scipy.special.xlogy (nan gradient at x = y = 0) are left to the portable code.

log_sigmoid = jax.nn.log_sigmoid
softplus = jax.nn.softplus
positive_part = jax.nn.relu  # gradient 0 at 0


def logsumexp(x, axis, keepdims):
    """``jax.nn.logsumexp`` along ``axis``."""
    return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)
