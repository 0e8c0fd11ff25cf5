"""CTC kernels, compiled by numba: the loss, and the loss with torch's gradient.

Shapes: ``log_probs`` (T, N, C), float32 or float64, read in its own dtype and
layout (no float64 copy of the input, and no copy of its exponential either: each
frame's row is exponentiated as it is read, :func:`frame_emissions`); ``ext``
(N, W + 2) the blank-extended labels ``l'`` of
:func:`anyloss._ctc_recursion.extended_labels` (W = 2S + 1 for the longest target S)
and two blank columns (the backward pass reads s + 2), int64; ``skipf`` (N, W + 2)
float64, 1.0 where state s may be entered from state s - 2 (a label differing from
the one two states back), 0.0 elsewhere and in the two padding
columns; ``il``, ``tl`` (N,) int64 input and target lengths; ``order`` (N,) the
samples longest first, dealt round-robin to ``n_slots`` parallel slots (one per
thread: the long samples spread over the threads). Sample n has ``L = il[n]``
frames and ``K = 2 tl[n] + 1`` states; its loss is ``-log p(l | x)``.

The math (Graves et al., 2006, "Connectionist temporal classification",
sections 4.1 and 4.2). With ``y_t(s) = exp(log_probs[t, n, l'_s])``:

- forward: ``alpha_t(s) = y_t(s) (alpha_{t-1}(s) + alpha_{t-1}(s-1) + skip(s)
  alpha_{t-1}(s-2))``, ``alpha_0`` non-zero in states 0 and 1, and
  ``p = alpha_{L-1}(K-1) + alpha_{L-1}(K-2)``;
- backward (here without the frame's own emission, ``b_t(s) = beta_t(s) / y_t(s)``
  in Graves' notation): ``b_{L-1}(s) = 1`` for the last two states, and
  ``b_t(s) = w_{t+1}(s) + w_{t+1}(s+1) + skip(s+2) w_{t+1}(s+2)`` with
  ``w_{t+1}(s) = y_{t+1}(s) b_{t+1}(s)``;
- posterior and gradient (torch's, of the loss with respect to ``log_probs``):
  ``alpha_t(s) b_t(s)`` summed over s is ``p`` at every frame, so the occupancy
  of class c at frame t is ``q_t(c) = sum_{s: l'_s = c} alpha_t(s) b_t(s) / Z_t``
  with ``Z_t = sum_s alpha_t(s) b_t(s)``, and
  ``grad[t, n, c] = exp(log_probs[t, n, c]) - q_t(c)`` for t < L, 0 past it.

Both recursions run in probability space, each frame divided by the sum of the
previous one (Graves' rescaling, sec. 4.1), so there is no ``exp``/``log`` per
state: a frame's emissions ``exp(log_probs[t, n])`` are computed for its whole row
by the vectorised :func:`.elementary.exp` as the recursion comes to it (one row of C
values in cache instead of a (T, N, C) copy), and there is one ``log`` per frame for
the loss. Only the states that are reached by frame t and can still reach the end
(the band ``low..high``) are computed; the others are exactly zero. Sums and
products of positive normal floats keep their relative precision, so the answer is
exact to rounding as long as no non-zero variable falls below :data:`TINY` (near
float64's subnormals).

Three tiers, per sample, each taken only when the one before may be inexact:

1. one scale per frame (:func:`forward_scaled`, :func:`gradient_scaled`): the
   fastest, for bands whose variables span less than float64's range;
2. one scale per block of :data:`BLOCK` states and frame (:func:`block_forward`,
   :func:`gradient_blocks`): a block's inflow from its neighbour block is taken
   into its own scale by one ``exp`` per block, and each block is renormalised by
   its sum (one ``log``); this carries long sequences (T=2000, S=300: the band
   spans more than float64's ~690 nats from frame ~500 on, while 32 neighbouring
   states span at most ~430 nats with standard normal logits over 1000 classes);
   for the loss alone it goes on from the first tier's last exact frame
   (:func:`to_blocks`), where the gradient, which stores every frame, starts again;
3. torch's log-space recursion (``logsumexp`` of three per state,
   :func:`forward_log`, :func:`gradient_log`), which gives torch's numbers in every
   case, including its ``inf`` loss and ``nan`` gradient for impossible alignments.

A tier declines (returns nan) when a variable with non-zero inflow and emission
comes out below :data:`TINY`, or a frame's occupancies sum to less than
:data:`Z_GUARD`. An emission of exactly 0 (``log_probs`` -inf) in the band makes
the first tier decline and is exact in the second; and the gradient is nan
wherever ``log_probs`` is -inf, as torch's ``exp(lp) - exp(log q + nll - lp)`` is.

Each sample is computed by one thread alone, in the same order whatever the
thread count, so the results do not depend on the number of threads.
"""

from __future__ import annotations

import math
from math import exp, log  # to become elementary.py's vectorisable exp/log when it lands

import numba
import numpy as np
from numba import prange

from anyloss.backends.numpy.compiled import elementary
from anyloss.backends.numpy.compiled.memory import prefetch_row
from anyloss.backends.numpy.compiled.parallel import parallel_kernel

#: A non-zero rescaled variable (a frame's or block's values sum to about 1) below this
#: may have lost digits to float64's subnormals: the tier declines.
TINY = 1e-300

#: A frame whose sum of ``alpha_t(s) b_t(s)`` (rescaled) is below this could carry the
#: rounding of underflowed products into its posteriors: the sample goes to log space.
Z_GUARD = 1e-250

#: Reassociation lets LLVM vectorise the sums; no ``nnan``/``ninf``, which would break
#: the inf/nan checks.
FASTMATH = {"reassoc", "nsz", "arcp", "contract"}


@numba.njit(cache=True, **elementary.JIT_OPTIONS)
def exp_row(src, dst):
    """``dst = exp(src)`` over a row (C,) in its dtype, by the vectorised
    :func:`.elementary.exp` (within 1 ulp). Compiled without reassociation, which would
    undo its rounding, so it is called, never inlined into the recursions."""
    for c in range(src.shape[0]):
        dst[c] = elementary.exp(src[c])


@numba.njit(cache=True, inline="always")
def frame_emissions(log_probs, t, n, buffer):
    """Frame t's emissions ``exp(log_probs[t, n])`` (C,) for sample n, computed into
    ``buffer`` (C,) as the frame is read: no (T, N, C) copy is made, and the recursion's
    gathers (at the states' labels) read a row in L1. A frame is exponentiated once by
    the forward recursion and once by the backward one (and again by a tier's retry)."""
    exp_row(log_probs[t, n], buffer)
    return buffer


def _band(n_states, length, t):
    """``(low, high)``: the states reached by frame t that can still reach the end."""
    return max(0, n_states - 2 * (length - t)), min(n_states, 2 * t + 2)


band = numba.njit(cache=True, inline="always")(_band)


@numba.njit(cache=True, fastmath=FASTMATH)
def forward_step(a, b, skipf, row, labels, low, high, inv):
    """One frame of the rescaled forward recursion over the band ``low..high``: ``b[s + 2] =
    inv (a[s + 2] + a[s + 1] + skipf[s] a[s]) row[labels[s]]``; returns the frame's sum,
    and how many non-zero inflows gave a value below :data:`TINY`.

    The loops index views from 0, so that numba's negative-index wraparound folds away
    and LLVM vectorises them.
    """
    prev = a[low:high + 2]
    out = b[low + 2:high + 2]
    skips = skipf[low:high]
    states = labels[low:high]
    total = 0.0
    flags = 0
    for i in range(high - low):
        inflow = (prev[i + 2] + prev[i + 1] + skips[i] * prev[i]) * inv
        value = inflow * np.float64(row[states[i]])
        out[i] = value
        total += value
        flags += (inflow > 0.0) & (value < TINY)
    return total, flags


@numba.njit(cache=True, fastmath=FASTMATH)
def forward_scaled(log_probs, n, labels, skipf, length, n_states, a, b, alpha, buffer,
                   resume):
    """``(ll, frame, log_scale)``: the log-likelihood of sample n by the rescaled forward
    recursion, or nan if it may be inexact (the caller then goes on with
    :func:`block_forward`, from the last exact frame when there is one).

    On a decline at frame t > 1, ``frame`` is t - 1 and ``resume`` (K + 2, state s at
    s + 2) holds that frame's band, ``alpha_{t-1} = resume exp(log_scale)``; else (and
    with an empty ``resume``) ``frame`` is 0: start again from the first frame.

    Each frame's emissions are computed into ``buffer`` (C,) (:func:`frame_emissions`).
    ``a``, ``b``: zeroed buffers of K + 2
    (state s at s + 2, so that the reads of s - 1 and s - 2 need no test). A frame's
    values are stored divided by the previous frame's sum (the first frame's by its
    peak). When ``alpha`` has L rows, each frame's band is stored there too (for the gradient).
    """
    store = alpha.shape[0] > 0
    row = frame_emissions(log_probs, 0, n, buffer)
    a[2] = row[labels[0]]
    lost = not (a[2] >= TINY)
    if n_states > 1:
        a[3] = row[labels[1]]
        lost |= not (a[3] >= TINY)
    if store:
        for s in range(min(n_states, 2)):
            alpha[0, s] = a[s + 2]
    peak = max(a[2], a[3])
    if lost:
        return math.nan, 0, 0.0
    log_scale = log(peak)
    for t in range(1, length):
        if t + 1 < length:
            prefetch_row(log_probs[t + 1, n])
        low, high = band(n_states, length, t)
        row = frame_emissions(log_probs, t, n, buffer)
        prev_peak = peak
        peak, flags = forward_step(a, b, skipf, row, labels, low, high, 1.0 / peak)
        if flags or not (peak >= TINY):
            if t == 1 or resume.shape[0] == 0:
                return math.nan, 0, 0.0
            # frame t - 1 is exact: alpha_{t-1} = a exp(log_scale - log(its sum))
            low, high = band(n_states, length, t - 1)
            for i in range(low + 2, high + 2):
                resume[i] = a[i]
            return math.nan, t - 1, log_scale - log(prev_peak)
        if store:
            stored = alpha[t, low:high]
            values = b[low + 2:high + 2]
            for i in range(high - low):
                stored[i] = values[i]
        log_scale += log(peak)
        a, b = b, a
    last = a[n_states + 1]
    if n_states > 1:
        last += a[n_states]
    if not (last > 0.0):
        return math.nan, 0, 0.0
    return log(last / peak) + log_scale, length - 1, 0.0


@numba.njit(cache=True)
def logsumexp3(a, b, c):
    """``log(exp(a) + exp(b) + exp(c))`` of three scalars; -inf for three -inf."""
    m = max(a, max(b, c))
    if m == -math.inf:
        return -math.inf
    return m + math.log(math.exp(a - m) + math.exp(b - m) + math.exp(c - m))


@numba.njit(cache=True)
def forward_log(log_probs, n, labels, skipf, length, n_states, alpha):
    """torch's log-space forward recursion: fill ``alpha`` (L, K) for sample n and
    return the log-likelihood (-inf for an impossible alignment)."""
    for s in range(n_states):
        alpha[0, s] = -math.inf
    alpha[0, 0] = log_probs[0, n, labels[0]]
    if n_states > 1:
        alpha[0, 1] = log_probs[0, n, labels[1]]
    for t in range(1, length):
        for s in range(n_states):
            a1 = alpha[t - 1, s]
            a2 = alpha[t - 1, s - 1] if s > 0 else -math.inf
            a3 = alpha[t - 1, s - 2] if s > 1 and skipf[s] != 0.0 else -math.inf
            alpha[t, s] = logsumexp3(a1, a2, a3) + log_probs[t, n, labels[s]]
    last = alpha[length - 1, n_states - 1]
    prev = alpha[length - 1, n_states - 2] if n_states > 1 else -math.inf
    return logsumexp3(last, prev, -math.inf)


#: States per block of the block-scaled recursions: each block of a frame has its own scale.
BLOCK = 32


@numba.njit(cache=True, fastmath=FASTMATH)
def forward_run(src, dst, skips, states, row, factor, marks):
    """``dst[i] = factor (src[i + 2] + src[i + 1] + skips[i] src[i]) row[states[i]]``, and
    ``marks[i]`` 1.0 where both the inflow and the emission are non-zero; returns the sum."""
    total = 0.0
    for i in range(dst.shape[0]):
        y = np.float64(row[states[i]])
        raw = src[i + 2] + src[i + 1] + skips[i] * src[i]
        value = raw * factor * y
        dst[i] = value
        marks[i] = 1.0 if (raw > 0.0) & (y > 0.0) else 0.0
        total += value
    return total


@numba.njit(cache=True, fastmath=FASTMATH)
def backward_run(src, dst, skips, states, row, factor, marks):
    """``dst[i] = factor (w[i] + w[i + 1] + skips[i] w[i + 2])`` with ``w[k] = row[states[k]]
    src[k]``, and ``marks[i]`` 1.0 where a term has non-zero factors; returns the sum."""
    total = 0.0
    for i in range(dst.shape[0]):
        y0 = np.float64(row[states[i]])
        y1 = np.float64(row[states[i + 1]])
        y2 = np.float64(row[states[i + 2]])
        value = (y0 * src[i] + y1 * src[i + 1] + skips[i] * y2 * src[i + 2]) * factor
        dst[i] = value
        live_in = ((y0 > 0.0) & (src[i] > 0.0)) | ((y1 > 0.0) & (src[i + 1] > 0.0))
        live_in |= (y2 > 0.0) & (skips[i] * src[i + 2] > 0.0)
        marks[i] = 1.0 if live_in else 0.0
        total += value
    return total


@numba.njit(cache=True, fastmath=FASTMATH)
def normalize(dst, marks, total):
    """Divide ``dst`` by ``total`` (its sum); return how many marked entries came out below
    :data:`TINY` (all marked ones when the sum is 0)."""
    flags = 0
    if not (total > 0.0):
        for i in range(dst.shape[0]):
            flags += marks[i] > 0.0
        return flags
    inv = 1.0 / total
    for i in range(dst.shape[0]):
        m = dst[i] * inv
        dst[i] = m
        flags += (marks[i] > 0.0) & (m < TINY)
    return flags


@numba.njit(cache=True, fastmath=FASTMATH)
def block_forward_step(prev, prev_scale, out, out_scale, skipf, row, labels, low, high, live):
    """One frame of the block-scaled forward recursion over the band ``low..high``.

    ``prev``/``out``: mantissas (K + 2, state s at s + 2), each block's summing to 1;
    ``prev_scale``/``out_scale``: the natural log of each block's scale (nb + 1,
    -inf for a block without mass), so that ``alpha_t(s) = out[s + 2] exp(out_scale[s //
    BLOCK])``. A block's inflow is taken in the larger of its own and the block
    below's scale. ``live``: scratch (K,). Returns how many states with a non-zero
    inflow and emission came out below :data:`TINY` (digits may be lost).
    """
    flags = 0
    for j in range(low // BLOCK, (high - 1) // BLOCK + 1):
        first = j * BLOCK
        s0, s1 = max(low, first), min(high, first + BLOCK)
        own = prev_scale[j]
        below = prev_scale[j - 1] if j > 0 and s0 < first + 2 else -math.inf
        base = max(own, below)
        src = prev[s0:s1 + 2]  # src[i + 2] is state s0 + i
        dst = out[s0 + 2:s1 + 2]
        if base == -math.inf:
            for i in range(s1 - s0):
                dst[i] = 0.0
            out_scale[j] = -math.inf
            continue
        f_own = 1.0 if own == base else exp(own - base)  # one of the two is 1
        f_below = 1.0 if below == base else exp(below - base)
        skips, states, marks = skipf[s0:s1], labels[s0:s1], live[s0:s1]
        lead = max(0, min(s1, first + 2) - s0)  # states that read the block below
        total = 0.0
        for i in range(lead):
            g1 = f_below if s0 + i - 1 < first else f_own
            g2 = f_below if s0 + i - 2 < first else f_own
            y = np.float64(row[states[i]])
            raw = src[i + 2] + src[i + 1] + skips[i] * src[i]
            value = (src[i + 2] * f_own + src[i + 1] * g1 + skips[i] * src[i] * g2) * y
            dst[i] = value
            marks[i] = 1.0 if (raw > 0.0) & (y > 0.0) else 0.0
            total += value
        total += forward_run(src[lead:], dst[lead:], skips[lead:], states[lead:], row, f_own,
                             marks[lead:])
        flags += normalize(dst, marks, total)
        out_scale[j] = base + log(total) if total > 0.0 else -math.inf
    return flags


@numba.njit(cache=True, fastmath=FASTMATH)
def block_backward_step(nxt, nxt_scale, row, out, out_scale, skipf, labels, low, high,
                        n_states, live):
    """One frame of the block-scaled backward recursion: from ``b_t`` (``nxt``, K + 2,
    state s at s, and its block scales) and frame t's emissions ``row``, ``b_{t-1}(s) =
    y_t(s) b_t(s) + y_t(s+1) b_t(s+1) + skip(s+2) y_t(s+2) b_t(s+2)`` over the band
    ``low..high`` of frame t - 1, in ``out`` and ``out_scale``; a block's sum taken in
    the larger of its own and the block above's scale. Returns the count of states
    that may have lost digits, as :func:`block_forward_step`."""
    flags = 0
    for j in range(low // BLOCK, (high - 1) // BLOCK + 1):
        first = j * BLOCK
        end = first + BLOCK  # the block above starts here
        s0, s1 = max(low, first), min(high, end)
        own = nxt_scale[j]
        above = nxt_scale[j + 1] if end < min(s1 + 2, n_states) else -math.inf
        base = max(own, above)
        src = nxt[s0:s1 + 2]  # src[i] is state s0 + i
        ys = labels[s0:s1 + 2]
        dst = out[s0:s1]
        if base == -math.inf:
            for i in range(s1 - s0):
                dst[i] = 0.0
            out_scale[j] = -math.inf
            continue
        f_own = 1.0 if own == base else exp(own - base)  # one of the two is 1
        f_above = 1.0 if above == base else exp(above - base)
        skips, marks = skipf[s0 + 2:s1 + 2], live[s0:s1]
        inner = min(s1, end - 2) - s0  # the states after these read the block above
        total = backward_run(src, dst[:max(0, inner)], skips, ys, row, f_own, marks)
        for i in range(max(0, inner), s1 - s0):
            g1 = f_above if s0 + i + 1 >= end else f_own
            g2 = f_above if s0 + i + 2 >= end else f_own
            y0 = np.float64(row[ys[i]])
            y1 = np.float64(row[ys[i + 1]])
            y2 = np.float64(row[ys[i + 2]])
            value = y0 * src[i] * f_own + y1 * src[i + 1] * g1 + skips[i] * y2 * src[i + 2] * g2
            dst[i] = value
            live_in = ((y0 > 0.0) & (src[i] > 0.0)) | ((y1 > 0.0) & (src[i + 1] > 0.0))
            live_in |= (y2 > 0.0) & (skips[i] * src[i + 2] > 0.0)
            marks[i] = 1.0 if live_in else 0.0
            total += value
        flags += normalize(dst, marks, total)
        out_scale[j] = base + log(total) if total > 0.0 else -math.inf
    return flags


@numba.njit(cache=True, fastmath=FASTMATH)
def to_blocks(values, log_scale, low, high, out, out_scale):
    """The band ``low..high`` of ``values exp(log_scale)`` (K + 2, state s at s + 2) in
    block form: mantissas ``out`` (each block's summing to 1) and block scales
    ``out_scale`` (natural log; -inf for a block without mass). True if that may be
    inexact: no mass at all, or a non-zero value whose mantissa is below :data:`TINY`."""
    mass = False
    for j in range(low // BLOCK, (high - 1) // BLOCK + 1):
        s0, s1 = max(low, j * BLOCK), min(high, (j + 1) * BLOCK)
        src, dst = values[s0 + 2:s1 + 2], out[s0 + 2:s1 + 2]
        total = 0.0
        for i in range(s1 - s0):
            total += src[i]
        if not (total > 0.0):
            for i in range(s1 - s0):
                dst[i] = 0.0
            out_scale[j] = -math.inf
            continue
        mass = True
        inv = 1.0 / total
        lost = 0
        for i in range(s1 - s0):
            m = src[i] * inv
            dst[i] = m
            lost += (src[i] > 0.0) & (m < TINY)
        if lost:
            return True
        out_scale[j] = log_scale + log(total)
    return not mass


@numba.njit(cache=True, fastmath=FASTMATH)
def block_forward(log_probs, n, labels, skipf, length, n_states, alpha, alpha_scale,
                  buffer, start, first, first_log_scale):
    """Log-likelihood of sample n by the block-scaled forward recursion (for the samples
    whose band spans more than float64's range); nan if it may be inexact. With L rows,
    ``alpha`` (L, K) and ``alpha_scale`` (L, nb + 1) receive each frame's band (from the
    first frame: ``start`` 0). The emissions as in :func:`forward_scaled`. With ``start``
    > 0 the recursion goes on from frame ``start``, whose alpha is ``first exp(
    first_log_scale)`` (what :func:`forward_scaled` leaves when it declines)."""
    n_blocks = (n_states + BLOCK - 1) // BLOCK
    store = alpha.shape[0] > 0
    a, b = np.zeros(n_states + 2), np.zeros(n_states + 2)
    sa, sb = np.full(n_blocks + 1, -math.inf), np.full(n_blocks + 1, -math.inf)
    live = np.empty(n_states)
    if start > 0:
        low, high = band(n_states, length, start)
        if to_blocks(first, first_log_scale, low, high, a, sa):
            return math.nan
    else:
        row = frame_emissions(log_probs, 0, n, buffer)
        y0 = np.float64(row[labels[0]])
        y1 = np.float64(row[labels[1]]) if n_states > 1 else 0.0
        total = y0 + y1
        if not (total > 0.0):
            return math.nan
        a[2] = y0 / total
        if (y0 > 0.0) & (a[2] < TINY):
            return math.nan
        if n_states > 1:
            a[3] = y1 / total
            if (y1 > 0.0) & (a[3] < TINY):
                return math.nan
        sa[0] = log(total)
        if store:
            for s in range(min(n_states, 2)):
                alpha[0, s] = a[s + 2]
            alpha_scale[0, :] = sa
    for t in range(start + 1, length):
        if t + 1 < length:
            prefetch_row(log_probs[t + 1, n])
        low, high = band(n_states, length, t)
        row = frame_emissions(log_probs, t, n, buffer)
        if block_forward_step(a, sa, b, sb, skipf, row, labels, low, high, live):
            return math.nan
        if store:
            stored, values = alpha[t, low:high], b[low + 2:high + 2]
            for i in range(high - low):
                stored[i] = values[i]
            alpha_scale[t, :] = sb
        a, b = b, a
        sa, sb = sb, sa
    last = n_states - 1
    ll = -math.inf
    for s in range(max(0, last - 1), last + 1):
        if a[s + 2] > 0.0:
            term = log(a[s + 2]) + sa[s // BLOCK]
            m = max(ll, term)
            ll = m + log(exp(ll - m) + exp(term - m))
    return ll if ll > -math.inf else math.nan


@numba.njit(cache=True, fastmath=FASTMATH)
def gradient_blocks(log_probs, n, labels, skipf, length, n_states, grad, buffer):
    """:func:`gradient_scaled` with a scale per block of states (see
    :func:`block_forward`); nan if it may be inexact."""
    n_classes = log_probs.shape[2]
    n_blocks = (n_states + BLOCK - 1) // BLOCK
    alpha = np.empty((length, n_states))
    alpha_scale = np.empty((length, n_blocks + 1))
    ll = block_forward(log_probs, n, labels, skipf, length, n_states, alpha, alpha_scale,
                       buffer, 0, np.empty(0), 0.0)
    if math.isnan(ll):
        return ll
    b, nxt = np.zeros(n_states + 2), np.zeros(n_states + 2)
    sb, sn = np.full(n_blocks + 1, -math.inf), np.full(n_blocks + 1, -math.inf)
    live = np.empty(n_states)
    block_sums = np.empty(n_blocks)
    post = np.zeros(n_classes)
    for s in range(max(0, n_states - 2), n_states):  # b = 1; the two may straddle blocks
        j = s // BLOCK
        share = 0.0
        for r in range(max(0, n_states - 2), n_states):
            if r // BLOCK == j:
                share += 1.0
        b[s] = 1.0 / share
        sb[j] = log(share)
    for t in range(length - 1, -1, -1):
        if t > 0:
            prefetch_row(log_probs[t - 1, n])
        row = frame_emissions(log_probs, t, n, buffer)
        low, high = band(n_states, length, t)
        j0, j1 = low // BLOCK, (high - 1) // BLOCK
        top = -math.inf
        for j in range(j0, j1 + 1):
            s0, s1 = max(low, j * BLOCK), min(high, (j + 1) * BLOCK)
            here, there = alpha[t, s0:s1], b[s0:s1]
            total = 0.0
            for i in range(s1 - s0):
                total += here[i] * there[i]
            block_sums[j] = alpha_scale[t, j] + sb[j] + log(total) if total > 0.0 else -math.inf
            top = max(top, block_sums[j])
        if not (top > -math.inf):
            return math.nan
        z = 0.0
        for j in range(j0, j1 + 1):
            z += exp(block_sums[j] - top)
        for j in range(j0, j1 + 1):
            s0, s1 = max(low, j * BLOCK), min(high, (j + 1) * BLOCK)
            weight = exp(alpha_scale[t, j] + sb[j] - top) / z
            occupancy(alpha[t, s0:s1], b[s0:s1], labels[s0:s1], post, weight)
        write_row(log_probs[t, n], row, post, 1.0, grad[t, n])
        for s in range(low, high):
            post[labels[s]] = 0.0
        if t == 0:
            break
        low, high = band(n_states, length, t - 1)
        if block_backward_step(b, sb, row, nxt, sn, skipf, labels, low, high,
                               n_states, live):
            return math.nan
        b, nxt = nxt, b
        sb, sn = sn, sb
    return ll


@numba.njit(cache=True)
def sample_loss(log_probs, n, labels, skipf, length, target_length):
    """The loss ``-log p`` of sample n (inf for an impossible alignment)."""
    if length == 0:
        return 0.0 if target_length == 0 else math.inf
    n_states = 2 * target_length + 1
    buffer = np.empty_like(log_probs[0, n])
    resume = np.zeros(n_states + 2)
    ll, frame, log_scale = forward_scaled(log_probs, n, labels, skipf, length, n_states,
                                          np.zeros(n_states + 2), np.zeros(n_states + 2),
                                          np.empty((0, 0)), buffer, resume)
    if math.isnan(ll):  # the block-scaled recursion from the last exact frame
        ll = block_forward(log_probs, n, labels, skipf, length, n_states, np.empty((0, 0)),
                           np.empty((0, 0)), buffer, frame, resume, log_scale)
    if math.isnan(ll):
        ll = forward_log(log_probs, n, labels, skipf, length, n_states,
                         np.empty((length, n_states)))
    return -ll


@parallel_kernel(cache=True)
def forward(log_probs, ext, skipf, il, tl, order, n_slots, losses):
    """Fill ``losses`` (N,) with each sample's loss."""
    batch = il.shape[0]
    for slot in prange(n_slots):
        for i in range(slot, batch, n_slots):
            n = order[i]
            losses[n] = sample_loss(log_probs, n, ext[n], skipf[n], il[n], tl[n])


@numba.njit(cache=True, fastmath=FASTMATH)
def write_row(log_probs, probs, post, inv_z, grad):
    """One frame's gradient (C,): ``grad = probs - post * inv_z`` (``probs`` the row's
    emissions ``exp(log_probs)``), and nan where
    ``log_probs`` is -inf (torch's ``exp(lp) - exp(log q + nll - lp)`` is nan there)."""
    for c in range(log_probs.shape[0]):
        x = log_probs[c]
        g = np.float64(probs[c]) - post[c] * inv_z
        grad[c] = math.nan if x == -math.inf else g


@numba.njit(cache=True, fastmath=FASTMATH)
def occupancy(alpha, b, states, post, weight=1.0):
    """Add ``weight alpha[i] b[i]`` to ``post[states[i]]`` over a band; return their sum."""
    z = 0.0
    for i in range(alpha.shape[0]):
        p = alpha[i] * b[i] * weight
        z += p
        post[states[i]] += p
    return z


@numba.njit(cache=True, fastmath=FASTMATH)
def emit_backward(b, row, states):
    """``b[i] *= row[states[i]]`` over a band (``w_t = y_t b_t``, in place); return the sum,
    and how many non-zero ``b[i]`` gave a product below :data:`TINY`."""
    total = 0.0
    flags = 0
    for i in range(b.shape[0]):
        w = np.float64(row[states[i]]) * b[i]
        flags += (b[i] > 0.0) & (w < TINY)
        b[i] = w
        total += w
    return total, flags


@numba.njit(cache=True, fastmath=FASTMATH)
def backward_step(w, out, skipf, low, high, inv):
    """One frame of the rescaled backward recursion over the band ``low..high``:
    ``out[s] = inv (w[s] + w[s + 1] + skipf[s + 2] w[s + 2])``."""
    nxt = w[low:high + 2]
    skips = skipf[low + 2:high + 2]
    dest = out[low:high]
    for i in range(high - low):
        dest[i] = (nxt[i] + nxt[i + 1] + skips[i] * nxt[i + 2]) * inv


@numba.njit(cache=True, fastmath=FASTMATH)
def gradient_scaled(log_probs, n, labels, skipf, length, n_states, grad, buffer):
    """Log-likelihood of sample n, and its gradient in ``grad[:length, n]``, by the
    rescaled alpha-beta recursions; nan if they may be inexact (the rows written
    are then to be overwritten by :func:`gradient_log`)."""
    n_classes = log_probs.shape[2]
    alpha = np.empty((length, n_states))
    post = np.zeros(n_classes)
    ll, _, _ = forward_scaled(log_probs, n, labels, skipf, length, n_states,
                              np.zeros(n_states + 2), np.zeros(n_states + 2), alpha, buffer,
                              np.empty(0))
    if math.isnan(ll):
        return ll
    b = np.zeros(n_states + 2)  # b_t(s) at s; two zeros past the last state
    nxt = np.zeros(n_states + 2)
    b[n_states - 1] = 1.0
    if n_states > 1:
        b[n_states - 2] = 1.0
    for t in range(length - 1, -1, -1):
        if t > 0:
            prefetch_row(log_probs[t - 1, n])
        row = frame_emissions(log_probs, t, n, buffer)
        low, high = band(n_states, length, t)
        states = labels[low:high]
        here = b[low:high]
        z = occupancy(alpha[t, low:high], here, states, post)
        if not (z >= Z_GUARD):
            return math.nan
        write_row(log_probs[t, n], row, post, 1.0 / z, grad[t, n])
        for i in range(high - low):
            post[states[i]] = 0.0
        if t == 0:
            break
        total, flags = emit_backward(here, row, states)
        if flags or not (total >= TINY):
            return math.nan
        low, high = band(n_states, length, t - 1)
        backward_step(b, nxt, skipf, low, high, 1.0 / total)
        b, nxt = nxt, b
    return ll


@numba.njit(cache=True)
def gradient_log(log_probs, n, labels, skipf, length, n_states, grad):
    """torch's log-space alpha-beta: the log-likelihood of sample n and its gradient in
    ``grad[:length, n]`` (nan rows when the alignment is impossible)."""
    n_classes = log_probs.shape[2]
    alpha = np.empty((length, n_states))
    ll = forward_log(log_probs, n, labels, skipf, length, n_states, alpha)
    if ll == -math.inf:
        return ll
    beta = np.full(n_states, -math.inf)
    beta[n_states - 1] = log_probs[length - 1, n, labels[n_states - 1]]
    if n_states > 1:
        beta[n_states - 2] = log_probs[length - 1, n, labels[n_states - 2]]
    post = np.empty(n_classes)
    for t in range(length - 1, -1, -1):
        if t < length - 1:
            for s in range(n_states):  # upwards: the reads of s+1, s+2 are frame t+1's
                b1 = beta[s]
                b2 = beta[s + 1] if s + 1 < n_states else -math.inf
                b3 = beta[s + 2] if s + 2 < n_states and skipf[s + 2] != 0.0 else -math.inf
                beta[s] = logsumexp3(b1, b2, b3) + log_probs[t, n, labels[s]]
        for c in range(n_classes):
            post[c] = 0.0
        for s in range(n_states):
            c = labels[s]
            post[c] += math.exp(alpha[t, s] + beta[s] - log_probs[t, n, c] - ll)
        for c in range(n_classes):
            x = log_probs[t, n, c]
            grad[t, n, c] = math.nan if x == -math.inf else math.exp(x) - post[c]
    return ll


@numba.njit(cache=True)
def sample_gradient(log_probs, n, labels, skipf, length, target_length, zero_infinity, grad):
    """Sample n's loss, with its gradient written to every row of ``grad[:, n]``."""
    n_frames, _, n_classes = log_probs.shape
    for t in range(length, n_frames):
        for c in range(n_classes):
            grad[t, n, c] = 0.0
    if length == 0:
        return 0.0 if target_length == 0 else math.inf
    n_states = 2 * target_length + 1
    buffer = np.empty_like(log_probs[0, n])
    ll = gradient_scaled(log_probs, n, labels, skipf, length, n_states, grad, buffer)
    if math.isnan(ll):
        ll = gradient_blocks(log_probs, n, labels, skipf, length, n_states, grad, buffer)
    if math.isnan(ll):
        ll = gradient_log(log_probs, n, labels, skipf, length, n_states, grad)
    if ll == -math.inf:
        value = 0.0 if zero_infinity else math.nan
        for t in range(length):
            for c in range(n_classes):
                grad[t, n, c] = value
    return -ll


@parallel_kernel(cache=True)
def gradient(log_probs, ext, skipf, il, tl, order, n_slots, zero_infinity, losses, grad):
    """Fill ``losses`` (N,) and torch's gradient of their sum ``grad`` (T, N, C)."""
    batch = il.shape[0]
    for slot in prange(n_slots):
        for i in range(slot, batch, n_slots):
            n = order[i]
            losses[n] = sample_gradient(log_probs, n, ext[n], skipf[n], il[n], tl[n],
                                        zero_infinity, grad)

