"""NumPy fast paths.

CTC has two engines here. With numba installed (the optional extra
``pip install "numba>=0.60"``), compiled loops run one sample per thread:
the forward pass in probability space with a rescaling at each frame, as in
Graves et al. (2006), section 4.1, which needs no ``exp``/``log`` per state, and
that sample is recomputed in log space whenever a forward variable comes near
float64's underflow, so that the answer is the exact loss; the gradient is the
log-space alpha-beta recursion. Without numba, the forward pass is log space
vectorized over batch and states, and the gradient is left to the generic
array-API alpha-beta recursion.
"""

from __future__ import annotations

import math

import numpy as np

try:  # optional extra
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

#: Whether the compiled kernels are available (tests run both engines where they can).
HAVE_NUMBA = numba is not None


def _extended_labels(targets, target_lengths, max_target_length, blank, n_classes):
    """(N, 2S+1) blank-extended labels and (N, 2S+1) "a skip from s-2 is allowed"."""
    tl = np.asarray(target_lengths, dtype=np.int64)
    batch, size = tl.shape[0], max_target_length
    targets = np.asarray(targets)
    positions = np.arange(size)
    valid = positions[None, :] < tl[:, None]
    if targets.ndim == 2:
        padded = targets[:, :size]
    elif targets.shape[0] == 0 or size == 0:
        padded = np.full((batch, size), blank)
    else:
        starts = np.cumsum(tl) - tl
        padded = targets[np.clip(starts[:, None] + positions, 0, targets.shape[0] - 1)]
    # Labels were range-checked on eager input; clipping keeps lazy (Dask) input in bounds.
    padded = np.clip(np.where(valid, padded, blank), 0, n_classes - 1).astype(np.int64)
    ext = np.full((batch, 2 * size + 1), blank, dtype=np.int64)
    ext[:, 1::2] = padded
    skip = np.zeros(ext.shape, dtype=np.bool_)
    skip[:, 3::2] = padded[:, 1:] != padded[:, :-1]
    return ext, skip


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) in ``log_probs``'s dtype."""
    ext, skip = _extended_labels(targets, target_lengths, max_target_length, blank,
                                 log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    if HAVE_NUMBA:
        probs = np.exp(log_probs, dtype=np.float64)
        losses = np.empty(il.shape[0], dtype=np.float64)
        _kernels()["forward"](log_probs, probs, ext, skip, il, tl, losses)
    else:
        losses = _vectorized_forward(log_probs, ext, skip, il, tl)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and torch's gradient of their sum (T, N, C), by alpha-beta."""
    if not HAVE_NUMBA:
        return NotImplemented
    ext, skip = _extended_labels(targets, target_lengths, max_target_length, blank,
                                 log_probs.shape[2])
    il = np.asarray(input_lengths, dtype=np.int64)
    tl = np.asarray(target_lengths, dtype=np.int64)
    losses = np.empty(il.shape[0], dtype=np.float64)
    grad = np.zeros(log_probs.shape, dtype=np.float64)
    _kernels()["gradient"](log_probs, ext, skip, il, tl, bool(zero_infinity), losses, grad)
    if zero_infinity:
        losses = np.where(losses == np.inf, 0.0, losses)
    return losses.astype(log_probs.dtype, copy=False), grad.astype(log_probs.dtype, copy=False)


# --- without numba: log space, vectorized over batch and states ----------------------------


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


# --- with numba: compiled per-sample loops ------------------------------------------------

_KERNELS: dict = {}

#: A rescaled forward variable below this (the frame's largest is 1) may lose digits in the
#: next frames: the sample is then recomputed in log space.
_UNDERFLOW_GUARD = 1e-280


def _kernels() -> dict:
    if not _KERNELS:
        _KERNELS.update(_compile())
    return _KERNELS


def _compile() -> dict:  # pragma: no cover - body runs compiled
    njit = numba.njit
    prange = numba.prange

    @njit(cache=True, fastmath=False)
    def logsumexp3(a, b, c):
        m = max(a, max(b, c))
        if m == -math.inf:
            return -math.inf
        return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m))

    @njit(cache=True)
    def forward_log(log_probs, n, ext, skip, length, n_states, alpha):
        """Fill alpha (T, n_states) in log space for sample n; return the log-likelihood."""
        for s in range(n_states):
            alpha[0, s] = -math.inf
        alpha[0, 0] = log_probs[0, n, ext[0]]
        if n_states > 1:
            alpha[0, 1] = log_probs[0, n, ext[1]]
        for t in range(1, length):
            for s in range(n_states):
                a1 = alpha[t - 1, s]
                a2 = alpha[t - 1, s - 1] if s > 0 else -math.inf
                a3 = alpha[t - 1, s - 2] if s > 1 and skip[s] else -math.inf
                alpha[t, s] = logsumexp3(a1, a2, a3) + log_probs[t, n, ext[s]]
        last = alpha[length - 1, n_states - 1]
        prev = alpha[length - 1, n_states - 2] if n_states > 1 else -math.inf
        return logsumexp3(last, prev, -math.inf)

    @njit(cache=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
    def forward_scaled(probs, n, ext, skipf, length, n_states, a, b):
        """Log-likelihood of sample n in rescaled probability space; nan if it may be inexact.

        ``a`` and ``b`` are two zeroed buffers of n_states + 2 (state s lives at s + 2, so
        that the reads of s - 1 and s - 2 need no test). A frame stores its values
        unscaled; the next frame divides by their peak.
        """
        a[2] = probs[0, n, ext[0]]
        if n_states > 1:
            a[3] = probs[0, n, ext[1]]
        peak = max(a[2], a[3])
        if not (peak > _UNDERFLOW_GUARD):
            return math.nan
        log_scale = math.log(peak)
        inv = 1.0 / peak
        for t in range(1, length):
            low = max(0, n_states - 2 * (length - t))  # states below cannot reach the end
            high = min(n_states, 2 * t + 2)  # states above are not reached yet
            peak = 0.0
            lost = 0
            for s in range(low, high):
                inflow = a[s + 2] + a[s + 1] + skipf[s] * a[s]
                value = inflow * probs[t, n, ext[s]] * inv
                b[s + 2] = value
                peak = max(peak, value)
                lost += (inflow > 0.0) & (value < _UNDERFLOW_GUARD)
            if lost or not (peak > 0.0):
                return math.nan
            log_scale += math.log(peak)
            inv = 1.0 / peak
            a, b = b, a
        last = a[n_states + 1]
        if n_states > 1:
            last += a[n_states]
        if not (last > 0.0):
            return math.nan
        return math.log(last * inv) + log_scale

    @njit(cache=True, parallel=True)
    def forward(log_probs, probs, ext, skip, il, tl, losses):
        batch = il.shape[0]
        skipf = skip.astype(np.float64)
        for n in prange(batch):
            length, n_states = il[n], 2 * tl[n] + 1
            if length == 0:
                losses[n] = 0.0 if tl[n] == 0 else math.inf
                continue
            ll = forward_scaled(probs, n, ext[n], skipf[n], length, n_states,
                                np.zeros(n_states + 2), np.zeros(n_states + 2))
            if math.isnan(ll):
                alpha = np.empty((length, n_states))
                ll = forward_log(log_probs, n, ext[n], skip[n], length, n_states, alpha)
            losses[n] = -ll

    @njit(cache=True, parallel=True)
    def gradient(log_probs, ext, skip, il, tl, zero_infinity, losses, grad):
        batch = il.shape[0]
        n_classes = log_probs.shape[2]
        for n in prange(batch):
            length, n_states = il[n], 2 * tl[n] + 1
            if length == 0:
                losses[n] = 0.0 if tl[n] == 0 else math.inf
                continue
            labels = ext[n]
            alpha = np.empty((length, n_states))
            ll = forward_log(log_probs, n, labels, skip[n], length, n_states, alpha)
            losses[n] = -ll
            if ll == -math.inf:
                value = 0.0 if zero_infinity else math.nan
                for t in range(length):
                    for c in range(n_classes):
                        grad[t, n, c] = value
                continue
            beta = np.full(n_states, -math.inf)
            beta[n_states - 1] = log_probs[length - 1, n, labels[n_states - 1]]
            if n_states > 1:
                beta[n_states - 2] = log_probs[length - 1, n, labels[n_states - 2]]
            posterior = np.empty(n_classes)
            for t in range(length - 1, -1, -1):
                if t < length - 1:
                    for s in range(n_states):  # upwards: reads of s+1, s+2 are frame t+1
                        b1 = beta[s]
                        b2 = beta[s + 1] if s + 1 < n_states else -math.inf
                        b3 = beta[s + 2] if s + 2 < n_states and skip[n, s + 2] else -math.inf
                        beta[s] = logsumexp3(b1, b2, b3) + log_probs[t, n, labels[s]]
                for c in range(n_classes):
                    posterior[c] = 0.0
                for s in range(n_states):
                    c = labels[s]
                    posterior[c] += math.exp(alpha[t, s] + beta[s] - log_probs[t, n, c] - ll)
                for c in range(n_classes):
                    grad[t, n, c] = math.exp(log_probs[t, n, c]) - posterior[c]

    return {"forward": forward, "gradient": gradient}
