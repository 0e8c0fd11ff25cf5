"""Cases and the float64 reference of ctc_loss.

The reference enumerates every alignment path explicitly (all label sequences
of length T over the C classes, collapsed by the CTC rule: merge repeats, then
drop blanks) and sums their probabilities with ``math.fsum``. It shares no
formula with anyloss's recursion, so it only suits the catalogue's tiny cases
(C**T paths per sample: T <= 6 with C <= 4 here).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, reference, register_cases, rng


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
    for n, (frames, size) in enumerate(zip(input_lengths, target_lengths)):
        if targets.ndim == 2:
            wanted = [int(c) for c in targets[n, :size]]
        else:
            wanted = [int(c) for c in targets[offset:offset + size]]
            offset += size
        n_classes = log_probs.shape[2]
        probability = math.fsum(
            math.exp(sum(log_probs[t, n, c] for t, c in enumerate(path)))
            for path in itertools.product(range(n_classes), repeat=frames)
            if _collapse(path, blank) == wanted
        )
        loss = -math.log(probability) if probability > 0 else math.inf
        if zero_infinity and loss == math.inf:
            loss = 0.0
        losses.append(loss)
    losses = np.asarray(losses, dtype=np.float64)
    if reduction == "none":
        return losses[0] if unbatched else losses
    if reduction == "sum":
        return np.asarray(math.fsum(losses))
    per_label = losses / np.maximum(np.asarray(target_lengths, dtype=np.float64), 1.0)
    return np.asarray(math.fsum(per_label) / len(per_label))


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@register_cases
def ctc_cases() -> Iterator[Case]:
    g = rng(400)
    grads = ("log_probs",)
    # (T, N, C), padded targets, input lengths, target lengths, label
    batched = [
        # plain, a repeat that needs a blank, an empty target, a shorter input
        ((6, 4, 4), [[1, 2, 3], [2, 2, 0], [0, 0, 0], [3, 1, 0]], [6, 5, 4, 3], [3, 2, 0, 2], "mixed"),
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
            yield Case("ctc_loss", arrays, {"reduction": reduction}, label=label,
                       differentiable=grads)
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
