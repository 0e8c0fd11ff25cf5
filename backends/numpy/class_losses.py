"""``nll_loss``, ``multi_margin_loss`` and ``multilabel_margin_loss`` by one compiled loop.

In NumPy each of these takes a dozen or two array calls, whose fixed cost exceeds
torch's whole call on gather-only problems (reading N scattered values of an
(N, C) array); one compiled loop per call (:mod:`.compiled.class_losses`) reads
the targets, checks them and adds up the loss, as torch's CPU kernels do.

These are registry kernels of stage ``'first'`` (:mod:`anyloss._registry`): they
take the public arguments *unchecked*. Each declines (``NotImplemented``)
anything but the plain case (numba installed; C-contiguous float32/float64
``(N, C)`` input, int64 targets, a weight of the input's dtype, N and C not 0)
and any call with a target value that anyloss would reject; anyloss's checked
path then runs and raises its own error. Sums are accumulated in float64 and
rounded once to the input's dtype.
"""

from __future__ import annotations

import numpy as np

from anyloss.backends.numpy import compiled
from anyloss.backends.numpy.results import reduced_result

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
#: Per dtype, the ``ones(1)`` a kernel reads without a weight and the empty ``out`` of a
#: reduced ``nll``: made once, since on gather-only problems each array call is a sizeable
#: part of the whole call. The kernels only read them (a read-only flag would make numba
#: compile other signatures).
_NO_WEIGHT = {d: np.ones(1, dtype=d) for d in _FLOATS}
_NO_OUT = {d: np.empty(0, dtype=d) for d in _FLOATS}


def _plain(input, target, target_rank: int) -> bool:
    """Whether the kernels take these arrays: numba present, a C-contiguous float32/float64
    ``(N, C)`` input with ``N, C > 0``, an int64 target of shape ``(N,)`` (``target_rank``
    1) or ``(N, C)`` (2). One function, since on gather-only problems each test is a
    visible part of the call."""
    if not (compiled.HAVE_NUMBA and type(input) is np.ndarray and type(target) is np.ndarray
            and input.ndim == 2 and target.ndim == target_rank and input.dtype in _FLOATS
            and target.dtype == _INT64 and input.flags.c_contiguous):
        return False
    n, c = input.shape
    return n > 0 and c > 0 and target.shape[0] == n and (target_rank == 1
                                                         or target.shape[1] == c)


def _kernel_weight(weight, input):
    """``(weight, weighted)`` as the kernels take them (``ones(1)`` and False without a
    weight), or ``None`` for a weight they cannot take: not a ``(C,)`` array of the
    input's dtype."""
    if weight is None:
        return _NO_WEIGHT[input.dtype], False
    if (type(weight) is np.ndarray and weight.dtype == input.dtype
            and weight.shape == input.shape[1:]):
        return weight, True
    return None


def nll_loss(input, target, weight, *, ignore_index, reduction):
    """``nll_loss`` of an ``(N, C)`` input by one compiled loop, or ``NotImplemented``."""
    if not (_plain(input, target, 1) and _INT64_MIN <= ignore_index <= _INT64_MAX):
        return NotImplemented
    kernel_weight = _kernel_weight(weight, input)
    if kernel_weight is None:
        return NotImplemented
    weight, weighted = kernel_weight
    unreduced = reduction == "none"
    out = np.empty(input.shape[0], dtype=input.dtype) if unreduced else _NO_OUT[input.dtype]
    kernels = compiled.load("class_losses")
    total, weights, bad = kernels.nll(input, target, weight, weighted, ignore_index, out,
                                      unreduced)
    if bad >= 0:
        return NotImplemented  # the checked path raises "Target k is out of bounds."
    return out if unreduced else reduced_result(total, weights, reduction, input.dtype)


def multilabel_margin_loss(input, target, *, reduction):
    """``multilabel_margin_loss`` of an ``(N, C)`` input by one compiled loop, or
    ``NotImplemented``."""
    if not _plain(input, target, 2):
        return NotImplemented
    losses = np.empty(input.shape[0], dtype=np.float64)
    kernels = compiled.load("class_losses")
    if not kernels.multilabel_margin(input, target, input.dtype.type(1.0), losses):
        return NotImplemented  # the checked path raises "... 'target' is out of range"
    if reduction == "none":
        return losses.astype(input.dtype)
    return reduced_result(float(losses.sum()), losses.shape[0], reduction, input.dtype)


def multi_margin_loss(input, target, *, p, margin, weight, reduction):
    """``multi_margin_loss`` of an ``(N, C)`` input by one compiled loop, or
    ``NotImplemented``."""
    if not (_plain(input, target, 1) and p in (1, 2)
            and type(margin) in (int, float)):
        return NotImplemented
    kernel_weight = _kernel_weight(weight, input)
    if kernel_weight is None:
        return NotImplemented
    weight, weighted = kernel_weight
    losses = np.empty(input.shape[0], dtype=np.float64)
    kernels = compiled.load("class_losses")
    if not kernels.multi_margin(input, target, weight, weighted, input.dtype.type(margin),
                                p == 2, losses):
        return NotImplemented  # the checked path raises "target out of range"
    if reduction == "none":
        return losses.astype(input.dtype)
    return reduced_result(float(losses.sum()), losses.shape[0], reduction, input.dtype)
