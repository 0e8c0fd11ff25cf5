"""CTC on NumPy arrays: the compiled kernels, or log space vectorised without numba.

With numba (:mod:`.compiled.ctc`), one sample per thread, longest samples first:
the loss, and the loss with torch's gradient, by the alpha-beta recursions in
rescaled probability space (Graves et al., 2006, sections 4.1-4.2), each sample
recomputed in log space where rescaling could lose digits. Without numba, the
forward pass runs in log space vectorised over batch and states, and the
gradient declines to the generic array-API alpha-beta recursion
(:func:`anyloss._ctc_recursion.losses_and_grad`).

The labels are extended with blanks by anyloss's own
:func:`anyloss._ctc_recursion.extended_labels`, on NumPy arrays.
"""

from __future__ import annotations

import array_api_compat.numpy as npx
import numpy as np

from anyloss import _ctc_recursion
from anyloss._threads import get_threads
from anyloss.backends.numpy import compiled

__all__ = ["ctc_loss", "ctc_loss_and_grad"]


def _labels(targets, target_lengths, max_target_length, blank, n_classes):
    """``(ext, skip)``: the (N, 2S+1) blank-extended labels as int64, and where a skip
    over a blank is allowed, as the kernels read them (C-contiguous)."""
    ext, skip = _ctc_recursion.extended_labels(
        npx, np.asarray(targets), np.asarray(target_lengths, dtype=np.int64),
        max_target_length, blank, n_classes)
    return (np.ascontiguousarray(ext, dtype=np.int64), np.ascontiguousarray(skip))


def _compiled_arguments(log_probs, targets, input_lengths, target_lengths, blank,
                        max_target_length):
    """The arrays the compiled kernels take (see :mod:`.compiled.ctc`): ``log_probs`` as
    float32/float64 in its own layout, ``ext`` (N, W + 2)
    int64 (blank-padded), ``skipf`` (N, W + 2) float64, ``il``,
    ``tl`` int64, the samples longest first, and the number of parallel slots."""
    ext, skip = _labels(targets, target_lengths, max_target_length, blank, log_probs.shape[2])
    il = np.ascontiguousarray(input_lengths, dtype=np.int64)
    tl = np.ascontiguousarray(target_lengths, dtype=np.int64)
    batch = il.shape[0]
    width = skip.shape[1]
    skipf = np.zeros((batch, width + 2))
    skipf[:, :width] = skip
    padded = np.full((batch, width + 2), blank, dtype=np.int64)  # the kernels read s + 2
    padded[:, :width] = ext
    ext = padded
    # The work of a sample grows as frames x states: the longest first, dealt round-robin.
    order = np.argsort(-(il * (2 * tl + 1)), kind="stable").astype(np.int64)
    import numba  # only reached with numba installed

    slots = max(1, min(get_threads(), numba.config.NUMBA_NUM_THREADS, batch))
    return log_probs, ext, skipf, il, tl, order, slots


def _float(log_probs):
    """``log_probs`` as float32 or float64 (what the kernels compile for), or None."""
    if log_probs.dtype in (np.float32, np.float64):
        return log_probs
    return None


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) in ``log_probs``'s dtype.

    ``log_probs`` (T, N, C); ``targets`` padded (N, S) or concatenated; lengths (N,).
    The loss of an impossible alignment is inf (0 with ``zero_infinity``).
    """
    if compiled.HAVE_NUMBA and _float(log_probs) is not None:
        args = _compiled_arguments(log_probs, targets, input_lengths, target_lengths, blank,
                                   max_target_length)
        losses = np.empty(args[3].shape[0], dtype=np.float64)
        compiled.load("ctc").forward(*args, losses)
    else:
        ext, skip = _labels(targets, target_lengths, max_target_length, blank,
                            log_probs.shape[2])
        il = np.asarray(input_lengths, dtype=np.int64)
        tl = np.asarray(target_lengths, dtype=np.int64)
        losses = _vectorized_forward(log_probs, ext, skip, il, tl)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and torch's gradient of their sum (T, N, C), both in
    ``log_probs``'s dtype, by the rescaled alpha-beta recursions; NotImplemented
    without numba. The gradient is 0 past each input length, nan (0 with
    ``zero_infinity``) for an impossible alignment."""
    if not compiled.HAVE_NUMBA or _float(log_probs) is None:
        return NotImplemented
    args = _compiled_arguments(log_probs, targets, input_lengths, target_lengths, blank,
                               max_target_length)
    losses = np.empty(args[3].shape[0], dtype=np.float64)
    grad = np.empty(log_probs.shape, dtype=log_probs.dtype)
    compiled.load("ctc").gradient(*args, bool(zero_infinity), losses, grad)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False), grad


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
