"""CTC kernels, compiled by numba: one sample per thread.

The forward pass runs in probability space with a rescaling at each frame, as in
Graves et al. (2006), section 4.1, which needs no ``exp``/``log`` per state; a
sample is recomputed in log space whenever a forward variable comes near
float64's underflow, so that the answer is the exact loss. The gradient is the
log-space alpha-beta recursion.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

#: A rescaled forward variable below this (the frame's largest is 1) may lose digits in the
#: next frames: the sample is then recomputed in log space.
UNDERFLOW_GUARD = 1e-280


@numba.njit(cache=True, fastmath=False)
def logsumexp3(a, b, c):
    """``log(exp(a) + exp(b) + exp(c))`` of three scalars; -inf for three -inf."""
    m = max(a, max(b, c))
    if m == -math.inf:
        return -math.inf
    return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m))


@numba.njit(cache=True)
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


@numba.njit(cache=True, fastmath={"reassoc", "nsz", "arcp", "contract"})
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
    if not (peak > UNDERFLOW_GUARD):
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
            lost += (inflow > 0.0) & (value < UNDERFLOW_GUARD)
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


@numba.njit(cache=True, parallel=True)
def forward(log_probs, probs, ext, skip, il, tl, losses):
    """Fill ``losses`` (N,) with each sample's loss, one sample per thread."""
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


@numba.njit(cache=True, parallel=True)
def gradient(log_probs, ext, skip, il, tl, zero_infinity, losses, grad):
    """Fill ``losses`` (N,) and torch's gradient ``grad`` (T, N, C) by alpha-beta, one
    sample per thread."""
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
