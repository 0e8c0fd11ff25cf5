"""JAX kernels: the primitives the standard lacks, CTC as one ``lax.scan``, jitted cross
entropy, and JAX's own building blocks.

Every function here is the target of a record of :mod:`anyloss._registry`,
declared beside the anyloss function it stands in for. The recursions and
formulas are anyloss's own (:mod:`anyloss._ctc_recursion`,
:mod:`anyloss._class_index`), compiled by JAX.
"""

from __future__ import annotations

import functools

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


_CTC_STATIC = ("blank", "zero_infinity", "max_target_length")


@functools.partial(jax.jit, static_argnames=_CTC_STATIC)
def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,): the forward recursion as one ``lax.scan`` over the frames,
    with anyloss's generic step (:mod:`anyloss._ctc_recursion`); gradients follow torch's
    convention.

    Compiled by ``jax.jit`` once per shape, dtype and options, also when called eagerly: an
    eager ``lax.scan`` traces and compiles its step on every call (its step is a new
    closure each time), which cost 0.12-0.15 s a call at T=50, N=4, C=6 against one
    dispatch now.
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
    losses = recursion.torch_gradient_convention(jnp, losses, log_probs, input_lengths,
                                                 zero_infinity)
    if zero_infinity:
        losses = jnp.where(losses == jnp.inf, jnp.zeros_like(losses), losses)
    return losses


@functools.partial(jax.jit, static_argnames=_CTC_STATIC)
def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum, by ``jax.vjp`` of :func:`ctc_loss`
    (compiled as it is)."""

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


# --- linear cross entropy: row blocks under lax.map, gradients by recomputation ------------

#: The bytes of one block's logits (and, in the backward pass, of its gradient) when the
#: options leave the rows open: 32 MiB, under 1% of an 8192 x 128256 float32 problem's.
LINEAR_BLOCK_BYTES = 32 << 20


def _linear_block_rows(n, d, c, itemsize, options):
    rows = None if options is None else options.rows_per_chunk(n, d, c)
    if rows is None:
        rows = LINEAR_BLOCK_BYTES // max(1, c * itemsize)
    return max(1, min(n, rows))


def _row_coefficients(t, weight, n_classes, ignore_index, label_smoothing, dtype):
    """Per row: the target weight ``w_y`` (0 where not usable), ``usable`` and ``invalid``
    (neither ignored nor a class), from anyloss's own masks."""
    from anyloss._class_index import masks

    ignored, in_range = masks(jnp, t, n_classes, ignore_index)
    usable = in_range & ~ignored
    safe = jnp.where(usable, t, 0)
    w_y = jnp.ones(t.shape, dtype) if weight is None else weight.astype(dtype)[safe]
    return jnp.where(usable, w_y, 0.0), usable, ~ignored & ~in_range, safe


def _linear_row_losses(x, w, b, t, weight, ignore_index, label_smoothing, rows):
    """Per-row losses (N,) of class-index targets, ``rows`` rows of logits at a time; the
    gradient (:func:`_linear_row_losses_bwd`) recomputes each block's logits."""
    losses, _ = _linear_row_losses_fwd(x, w, b, t, weight, ignore_index, label_smoothing,
                                       rows)
    return losses


def _blocks(a, rows):
    """``a`` (N, ...) padded to whole blocks: (N // rows rounded up, rows, ...)."""
    n = a.shape[0]
    pad = (-n) % rows
    if pad:
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
    return a.reshape((-1, rows, *a.shape[1:]))


def _block_logits(xb, w, b):
    logits = xb @ w.T
    return logits if b is None else logits + b


def _linear_row_losses_fwd(x, w, b, t, weight, ignore_index, label_smoothing, rows):
    n, c = x.shape[0], w.shape[0]
    eps = label_smoothing

    def block(args):
        xb, tb = args
        logits = _block_logits(xb, w, b)
        peak = jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
        peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
        lse = jnp.log(jnp.sum(jnp.exp(logits - peak), axis=1)) + peak[:, 0]
        w_y, usable, invalid, safe = _row_coefficients(tb, weight, c, ignore_index, eps,
                                                       logits.dtype)
        picked = jnp.take_along_axis(logits, safe[:, None], axis=1)[:, 0]
        loss = w_y * (lse - picked)
        if eps > 0:
            along = 1.0 if weight is None else weight.astype(logits.dtype)
            w_total = c if weight is None else jnp.sum(along)
            smooth = w_total * lse - jnp.sum(logits * along, axis=1)
            loss = (1.0 - eps) * loss + (eps / c) * jnp.where(usable, smooth, 0.0)
        loss = jnp.where(invalid, jnp.nan, loss)
        return loss, lse

    losses, lse = jax.lax.map(block, (_blocks(x, rows), _blocks(t, rows)))
    losses, lse = losses.reshape(-1)[:n], lse.reshape(-1)[:n]
    return losses, (x, w, b, t, weight, lse)


def _linear_row_losses_bwd(ignore_index, label_smoothing, rows, residuals, cotangent):
    x, w, b, t, weight, lse = residuals
    n, c = x.shape[0], w.shape[0]
    eps = label_smoothing

    def block(carry, args):
        grad_w, grad_b = carry
        xb, tb, lb, cb = args
        logits = _block_logits(xb, w, b)
        w_y, usable, invalid, safe = _row_coefficients(tb, weight, c, ignore_index, eps,
                                                       logits.dtype)
        coef = jnp.where(invalid, jnp.nan, jnp.where(usable, cb, 0.0))
        along = jnp.ones((c,), logits.dtype) if weight is None else weight.astype(logits.dtype)
        factor = (1.0 - eps) * w_y + (eps / c) * jnp.sum(along)
        g = (coef * factor)[:, None] * jnp.exp(logits - lb[:, None])
        g = g - (coef * (1.0 - eps) * w_y)[:, None] * jax.nn.one_hot(safe, c, dtype=g.dtype)
        if eps > 0:
            g = g - (coef * (eps / c))[:, None] * along
        grad_w = grad_w + g.T @ xb
        grad_b = None if grad_b is None else grad_b + jnp.sum(g, axis=0)
        return (grad_w, grad_b), g @ w

    start = (jnp.zeros_like(w), None if b is None else jnp.zeros_like(b))
    (grad_w, grad_b), grad_x = jax.lax.scan(
        block, start, (_blocks(x, rows), _blocks(t, rows), _blocks(lse, rows),
                       _blocks(cotangent, rows)))
    grad_x = grad_x.reshape(-1, x.shape[1])[:n]
    return grad_x, grad_w, grad_b, None, None


_linear_row_losses = jax.custom_vjp(_linear_row_losses, nondiff_argnums=(5, 6, 7))
_linear_row_losses.defvjp(_linear_row_losses_fwd, _linear_row_losses_bwd)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias, weight, reduction,
                         ignore_index, label_smoothing, options):
    """Class-index linear cross entropy by row blocks under ``lax.map``, with a custom VJP
    that recomputes each block's logits: neither the forward nor ``jax.grad`` holds the
    (N, C) logits (a 2-d ``linear_weight``; K-dimensional logits decline)."""
    if linear_weight.ndim != 2 or not jnp.issubdtype(target.dtype, jnp.integer):
        return NotImplemented
    x = input if input.ndim == 2 else input[None, :]
    t = target.reshape(x.shape[0])
    n, d = x.shape
    c = linear_weight.shape[0]
    rows = _linear_block_rows(n, d, c, x.dtype.itemsize, options)
    losses = _linear_row_losses(x, linear_weight, linear_bias, t, weight, ignore_index,
                                float(label_smoothing), rows)
    if reduction == "none":
        return losses if input.ndim == 2 else losses[0]
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    w_y, _, _, _ = _row_coefficients(t, weight, c, ignore_index, label_smoothing,
                                     losses.dtype)
    denominator = jnp.sum(w_y)
    empty = denominator == 0
    return jnp.where(empty, jnp.nan, total / jnp.where(empty, 1.0, denominator))


def linear_cross_entropy_and_grad(input, linear_weight, target, *, linear_bias, weight,
                                  reduction, ignore_index, label_smoothing, options):
    """The loss and, by ``jax.vjp`` of :func:`linear_cross_entropy`, its gradients wrt
    input, weight and bias (of the losses' sum for 'none')."""
    if linear_weight.ndim != 2 or not jnp.issubdtype(target.dtype, jnp.integer):
        return NotImplemented

    def loss_of(*params):
        bias = params[2] if len(params) == 3 else None
        return linear_cross_entropy(params[0], params[1], target, linear_bias=bias,
                                    weight=weight, reduction=reduction,
                                    ignore_index=ignore_index,
                                    label_smoothing=label_smoothing, options=options)

    params = (input, linear_weight) + (() if linear_bias is None else (linear_bias,))
    loss, pullback = jax.vjp(loss_of, *params)
    grads = pullback(jnp.ones_like(loss))
    return loss, grads[0], grads[1], grads[2] if linear_bias is not None else None
