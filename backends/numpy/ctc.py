"""CTC on NumPy arrays: the compiled kernels, or log space vectorised without numba.

With numba (:mod:`.compiled.ctc`), one sample per thread: the forward pass in
rescaled probability space (Graves et al., 2006, section 4.1), and the log-space
alpha-beta recursion for the gradient. Without numba, the forward pass runs in
log space vectorised over batch and states, and the gradient declines to the
generic array-API alpha-beta recursion (:func:`anyloss._ctc_recursion.losses_and_grad`).

The labels are extended with blanks by anyloss's own
:func:`anyloss._ctc_recursion.extended_labels`, on NumPy arrays.
"""

from __future__ import annotations

import array_api_compat.numpy as npx
import numpy as np

from anyloss import _ctc_recursion
from anyloss.backends.numpy import compiled

__all__ = ["ctc_loss", "ctc_loss_and_grad"]


def _labels(targets, target_lengths, max_target_length, blank, n_classes):
    """``(ext, skip)``: the (N, 2S+1) blank-extended labels as int64, and where a skip
    over a blank is allowed, as the kernels read them (C-contiguous)."""
    ext, skip = _ctc_recursion.extended_labels(
        npx, np.asarray(targets), np.asarray(target_lengths, dtype=np.int64),
        max_target_length, blank, n_classes)
    return (np.ascontiguousarray(ext, dtype=np.int64), np.ascontiguousarray(skip))


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) in ``log_probs``'s dtype."""
    ext, skip = _labels(targets, target_lengths, max_target_length, blank, log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    if compiled.HAVE_NUMBA:
        probs = np.exp(log_probs, dtype=np.float64)
        losses = np.empty(il.shape[0], dtype=np.float64)
        compiled.load("ctc").forward(log_probs, probs, ext, skip, il, tl, losses)
    else:
        losses = _vectorized_forward(log_probs, ext, skip, il, tl)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and torch's gradient of their sum (T, N, C), by alpha-beta."""
    if not compiled.HAVE_NUMBA:
        return NotImplemented
    ext, skip = _labels(targets, target_lengths, max_target_length, blank, log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    losses = np.empty(il.shape[0], dtype=np.float64)
    grad = np.zeros(log_probs.shape, dtype=np.float64)
    compiled.load("ctc").gradient(log_probs, ext, skip, il, tl, bool(zero_infinity), losses, grad)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False), grad.astype(log_probs.dtype, copy=False)


def _vectorized_forward(log_probs, ext, skip, il, tl):
    n_frames, batch, _ = log_probs.shape
    dtype = log_probs.dtype
    n_states = ext.shape[1]
    # emissions[t, n, s] = log_probs[t, n, ext[n, s]], one frame at a time (no (T, N, 2S+1) copy).
    flat = (np.arange(batch)[:, None] * log_probs.shape[2] + ext).ravel()
    frames = log_probs.reshape(n_frames, -1)
    skip_add = np.where(skip, 0.0, -np.inf).astype(dtype)
    floor = dtype.type(-1e30)
    # Two columns of -inf on the left make the shifted reads plain views.
    cur = np.full((batch, n_states + 2), -np.inf, dtype=dtype)
    nxt = cur.copy()
    cur[:, 2] = 0.0  # before the first frame: all mass in state 0 (log 1)
    peak, two_back, total, term = (np.empty((batch, n_states), dtype=dtype) for _ in range(4))
    running = il > 0
    for t in range(n_frames):
        a1, a2 = cur[:, 2:], cur[:, 1:-1]
        np.add(cur[:, :-2], skip_add, out=two_back)
        np.maximum(a1, a2, out=peak)
        np.maximum(peak, two_back, out=peak)
        np.maximum(peak, floor, out=peak)
        np.subtract(a1, peak, out=total)
        np.exp(total, out=total)
        for other in (a2, two_back):
            np.subtract(other, peak, out=term)
            np.exp(term, out=term)
            total += term
        out = nxt[:, 2:]
        with np.errstate(divide="ignore"):
            np.log(total, out=out)
        out += peak
        out += frames[t].take(flat).reshape(batch, n_states)
        if t == 0:
            out[~running] = cur[~running, 2:]
        else:
            stopped = t >= il
            if stopped.any():
                out[stopped] = cur[stopped, 2:]
        cur, nxt = nxt, cur
    alpha = cur[:, 2:].astype(np.float64)
    rows = np.arange(batch)
    end = alpha[rows, 2 * tl]
    before = np.where(tl > 0, alpha[rows, np.maximum(2 * tl - 1, 0)], -np.inf)
    return -np.logaddexp(end, before)
