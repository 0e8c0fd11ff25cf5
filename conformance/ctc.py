"""Cases and the float64 reference of ctc_loss.

For the catalogue's tiny cases (at most :data:`MAX_PATHS` paths of C**T per
sample) the reference enumerates every alignment path explicitly (all label
sequences of length T over the C classes, collapsed by the CTC rule: merge
repeats, then drop blanks) and sums their probabilities with ``math.fsum``.
Long sequences use a dynamic programme over *collapsed prefixes* instead: the
state after a frame is (labels emitted so far, whether the last frame was a
blank), a formulation that shares no code and no state layout with anyloss's
recursion over the blank-extended label sequence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, reduce, reference, register_cases, rng, terms_sum


def _collapse(path, blank):
    labels, previous = [], None
    for c in path:
        if c != previous and c != blank:
            labels.append(c)
        previous = c
    return labels


@reference("ctc_loss")
def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
             zero_infinity=False):
    """Minus the log of each sample's summed path probability; 'mean' is per target label."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    input_lengths = [int(n) for n in np.ravel(input_lengths)]
    target_lengths = [int(n) for n in np.ravel(target_lengths)]
    targets = np.asarray(targets)
    unbatched = log_probs.ndim == 2
    if unbatched:
        log_probs = log_probs[:, None, :]
        targets = targets.reshape(1, -1)
    losses = []
    offset = 0
    for n, (frames, size) in enumerate(zip(input_lengths, target_lengths, strict=True)):
        if targets.ndim == 2:
            wanted = [int(c) for c in targets[n, :size]]
        else:
            wanted = [int(c) for c in targets[offset:offset + size]]
            offset += size
        n_classes = log_probs.shape[2]
        if n_classes**frames <= MAX_PATHS:
            probability = math.fsum(
                math.exp(sum(log_probs[t, n, c] for t, c in enumerate(path)))
                for path in itertools.product(range(n_classes), repeat=frames)
                if _collapse(path, blank) == wanted
            )
            loss = -math.log(probability) if probability > 0 else math.inf
        else:
            loss = -_prefix_log_likelihood(log_probs[:frames, n, :], wanted, blank)
        if zero_infinity and loss == math.inf:
            loss = 0.0
        losses.append(loss)
    losses = np.asarray(losses, dtype=np.float64)
    if reduction == "none":
        return reduce(losses[0] if unbatched else losses, "none")
    if reduction == "sum":
        return np.asarray(terms_sum(losses))
    per_label = losses / np.maximum(np.asarray(target_lengths, dtype=np.float64), 1.0)
    return np.asarray(terms_sum(per_label) / len(per_label))


#: Above this many paths per sample the reference switches from enumeration to the prefix DP.
MAX_PATHS = 5000


def _log_add(*terms: float) -> float:
    finite = [t for t in terms if t != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(math.fsum(math.exp(t - top) for t in finite))


def _prefix_log_likelihood(log_probs, wanted, blank) -> float:
    """log p(wanted | frames) by a DP over (k labels emitted, last frame blank?) states."""
    size = len(wanted)
    # ended_blank[k]: k labels emitted, the last frame a blank (or no frame yet, for k = 0).
    # ended_label[k]: k >= 1 labels emitted, the last frame showed wanted[k - 1].
    ended_blank = [0.0] + [-math.inf] * size
    ended_label = [-math.inf] * (size + 1)
    for frame in log_probs:
        frame = [float(v) for v in frame]
        new_blank = [-math.inf] * (size + 1)
        new_label = [-math.inf] * (size + 1)
        for k in range(size + 1):
            here = _log_add(ended_blank[k], ended_label[k])
            new_blank[k] = _log_add(new_blank[k], here + frame[blank])
            if k >= 1:  # repeating the last label merges into it
                new_label[k] = _log_add(new_label[k], ended_label[k] + frame[wanted[k - 1]])
            if k < size:  # the next label: after a blank always, after a label only if different
                step = ended_blank[k]
                if k >= 1 and wanted[k] != wanted[k - 1]:
                    step = _log_add(step, ended_label[k])
                new_label[k + 1] = _log_add(new_label[k + 1], step + frame[wanted[k]])
        ended_blank, ended_label = new_blank, new_label
    return _log_add(ended_blank[size], ended_label[size])


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@register_cases
def ctc_cases() -> Iterator[Case]:
    """Padded, concatenated and unbatched targets, impossible alignments, a 120-frame case."""
    g = rng(400)
    grads = ("log_probs",)
    # (T, N, C), padded targets, input lengths, target lengths, label
    batched = [
        # plain, a repeat that needs a blank, an empty target, a shorter input
        ((6, 4, 4), [[1, 2, 3], [2, 2, 0], [0, 0, 0], [3, 1, 0]], [6, 5, 4, 3], [3, 2, 0, 2],
         "mixed"),
        # zero-length input: empty target costs 0; impossible ones only with zero_infinity (below)
        ((5, 2, 3), [[1, 2], [2, 1]], [5, 0], [2, 0], "empty-input"),
    ]
    for shape, targets, il, tl, label in batched:
        arrays = {
            "log_probs": _log_softmax(g.standard_normal(shape)),
            "targets": np.asarray(targets, dtype=np.int64),
            "input_lengths": np.asarray(il, dtype=np.int64),
            "target_lengths": np.asarray(tl, dtype=np.int64),
        }
        for reduction in REDUCTIONS:
            # An empty sample costs -log 1 = -0.0 in torch; the NumPy kernel
            # (backends/numpy, not the portable formula) returns +0.0 for it.
            yield Case("ctc_loss", arrays, {"reduction": reduction}, label=label,
                       differentiable=grads, signed_zeros=label != "empty-input")
    # blank in the middle of the alphabet, int32 targets and lengths
    arrays = {
        "log_probs": _log_softmax(g.standard_normal((5, 3, 4))),
        "targets": np.asarray([[0, 3, 0], [1, 1, 0], [3, 0, 1]], dtype=np.int32),
        "input_lengths": np.asarray([5, 5, 4], dtype=np.int32),
        "target_lengths": np.asarray([3, 2, 3], dtype=np.int32),
    }
    for reduction in REDUCTIONS:
        yield Case("ctc_loss", arrays, {"reduction": reduction, "blank": 2}, label="blank2",
                   differentiable=grads)
    # impossible alignments: [1, 1, 1] needs 5 frames, and a target longer than the input
    impossible = {
        "log_probs": _log_softmax(g.standard_normal((4, 3, 3))),
        "targets": np.asarray([[1, 1, 1], [1, 2, 1], [2, 0, 0]], dtype=np.int64),
        "input_lengths": np.asarray([4, 2, 4], dtype=np.int64),
        "target_lengths": np.asarray([3, 3, 1], dtype=np.int64),
    }
    for reduction in REDUCTIONS:
        yield Case("ctc_loss", impossible, {"reduction": reduction, "zero_infinity": True},
                   label="impossible", differentiable=grads)
        # inf losses: values only (torch's gradient of an infinite loss is nan)
        yield Case("ctc_loss", impossible, {"reduction": reduction}, label="impossible",
                   differentiable=())
    # concatenated 1-d targets
    concatenated = {
        "log_probs": _log_softmax(g.standard_normal((5, 3, 4))),
        "targets": np.asarray([1, 2, 3, 3, 2], dtype=np.int64),
        "input_lengths": np.asarray([5, 4, 5], dtype=np.int64),
        "target_lengths": np.asarray([2, 2, 1], dtype=np.int64),
    }
    for reduction in REDUCTIONS:
        yield Case("ctc_loss", concatenated, {"reduction": reduction}, label="concatenated",
                   differentiable=grads)
    # unbatched (T, C)
    unbatched = {
        "log_probs": _log_softmax(g.standard_normal((5, 3))),
        "targets": np.asarray([1, 2], dtype=np.int64),
        "input_lengths": np.asarray(5, dtype=np.int64),
        "target_lengths": np.asarray(2, dtype=np.int64),
    }
    for reduction in REDUCTIONS:
        yield Case("ctc_loss", unbatched, {"reduction": reduction}, label="unbatched",
                   differentiable=grads)
    # A long sequence (the prefix DP is the reference here): T=120, targets of 30 labels
    # with repeats, one sample shorter; values in float64 and float32 stay finite.
    long_targets = g.integers(1, 6, (2, 30))
    long_targets[:, 5] = long_targets[:, 4]  # a repeat that needs a blank
    long_case = {
        "log_probs": _log_softmax(g.standard_normal((120, 2, 6))),
        "targets": long_targets.astype(np.int64),
        "input_lengths": np.asarray([120, 97], dtype=np.int64),
        "target_lengths": np.asarray([30, 24], dtype=np.int64),
    }
    for reduction in REDUCTIONS:
        yield Case("ctc_loss", long_case, {"reduction": reduction}, label="long",
                   differentiable=grads)
