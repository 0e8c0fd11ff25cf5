"""Compiled (numba) NumPy kernels for the class losses that read few values per row.

``nll_loss`` reads one value per row, ``multi_margin_loss`` compares a row's target
class with the others and ``multilabel_margin_loss`` its listed classes with the
others: in NumPy each takes a dozen or two array calls, whose fixed cost exceeds
torch's whole call (torch's ``nll_loss`` at 2048 x 4096 takes some 7 us; reading
2048 scattered values alone costs NumPy's ``take_along_axis`` 12 us). Here one
compiled loop per call reads the targets, checks them and adds up the loss, as
torch's CPU kernels do.

These are entries of :data:`anyloss._dispatch.NATIVE_FIRST`: they take the public
arguments *unchecked*. Each declines (``NotImplemented``) anything but the plain
case (numba installed; C-contiguous float32/float64 ``(N, C)`` input, int64
targets, a weight of the input's dtype, N and C not 0) and any call with a target
value that anyloss would reject; anyloss's checked path then runs and raises its
own error. Sums are accumulated in float64 and rounded once to the input's dtype.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

HAVE_NUMBA = numba is not None

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.iinfo(np.int64)


@functools.cache
def _kernels() -> dict:  # pragma: no cover - bodies run compiled
    """The kernels, compiled (or loaded from numba's cache) on first use."""
    njit = numba.njit

    @njit(cache=True, nogil=True)
    def nll(x, target, weight, weighted, ignore_index, out, unreduced):
        """``(sum of losses, sum of weights, first bad row or -1)``; fills ``out``
        with the per-row losses when ``unreduced``. A row whose target is neither a
        class nor ``ignore_index`` stops the loop and is reported."""
        n, c = x.shape
        total = 0.0
        weights = 0.0
        for i in range(n):
            k = target[i]
            if k == ignore_index:
                if unreduced:
                    out[i] = 0.0
                continue
            if k < 0 or k >= c:
                return total, weights, i
            w = weight[k] if weighted else weight[0]  # weight is ones(1) then
            loss = -(x[i, k] * w)  # torch's and the generic formula's rounding
            if unreduced:
                out[i] = loss
            total += loss
            weights += w
        return total, weights, -1

    @njit(cache=True, nogil=True)
    def multilabel_margin(x, target, one, out):
        """Fills ``out`` (N,) with each row's loss (float64); False, and nothing
        computed, if a target value lies outside ``[-1, C)``."""
        n, c = x.shape
        for i in range(n):
            for j in range(c):
                if target[i, j] < -1 or target[i, j] >= c:
                    return False
        listed = np.zeros(c, dtype=np.bool_)
        for i in range(n):
            length = c
            for j in range(c):
                if target[i, j] < 0:
                    length = j
                    break
            listed[:] = False
            for j in range(length):
                listed[target[i, j]] = True
            total = 0.0
            for j in range(length):  # a class listed twice counts twice, as in torch
                first = one - x[i, target[i, j]]
                for m in range(c):
                    if not listed[m]:
                        z = first + x[i, m]  # (1 - x_j) + x_m, in the input's dtype
                        if z > 0:
                            total += z
            out[i] = total / c
        return True

    @njit(cache=True, nogil=True)
    def multi_margin(x, target, weight, weighted, margin, squared, out):
        """Fills ``out`` (N,) with each row's loss (float64); False, and nothing
        computed, if a target is not a class in ``[0, C)``."""
        n, c = x.shape
        for i in range(n):
            if target[i] < 0 or target[i] >= c:
                return False
        for i in range(n):
            k = target[i]
            first = margin - x[i, k]
            total = 0.0
            for m in range(c):
                if m != k:
                    z = first + x[i, m]  # (margin - x_y) + x_m, in the input's dtype
                    if z > 0:
                        total += z * z if squared else z
            loss = total / c
            out[i] = loss * weight[k] if weighted else loss
        return True

    return {"nll": nll, "multilabel_margin": multilabel_margin, "multi_margin": multi_margin}


def _plain_input(input) -> bool:
    return (HAVE_NUMBA and type(input) is np.ndarray and input.ndim == 2
            and input.dtype in _FLOATS and input.flags.c_contiguous
            and input.shape[0] > 0 and input.shape[1] > 0)


def _kernel_weight(weight, input):
    """``(weight, weighted)`` as the kernels take them (``ones(1)`` and False without a
    weight), or ``None`` for a weight they cannot take: not a ``(C,)`` array of the
    input's dtype."""
    if weight is None:
        return np.ones(1, dtype=input.dtype), False
    if (type(weight) is np.ndarray and weight.dtype == input.dtype
            and weight.shape == input.shape[1:]):
        return weight, True
    return None


def _reduced(values_sum: float, count: float, reduction: str, dtype):
    """A 0-d result as NumPy's reductions give it: a scalar of ``dtype``."""
    if reduction == "sum":
        return dtype.type(values_sum)
    return dtype.type(values_sum / count if count != 0 else np.nan)


def nll_loss_native_first(input, target, weight, *, ignore_index, reduction):
    """``nll_loss`` of an ``(N, C)`` input by one compiled loop, or ``NotImplemented``."""
    if not (_plain_input(input) and type(target) is np.ndarray and target.dtype == np.int64
            and target.shape == input.shape[:1] and _INT64.min <= ignore_index <= _INT64.max):
        return NotImplemented
    kernel_weight = _kernel_weight(weight, input)
    if kernel_weight is None:
        return NotImplemented
    weight, weighted = kernel_weight
    unreduced = reduction == "none"
    out = np.empty(input.shape[0] if unreduced else 0, dtype=input.dtype)
    total, weights, bad = _kernels()["nll"](input, target, weight, weighted, ignore_index,
                                            out, unreduced)
    if bad >= 0:
        return NotImplemented  # the checked path raises "Target k is out of bounds."
    return out if unreduced else _reduced(total, weights, reduction, input.dtype)


def multilabel_margin_loss_native_first(input, target, *, reduction):
    """``multilabel_margin_loss`` of an ``(N, C)`` input by one compiled loop, or
    ``NotImplemented``."""
    if not (_plain_input(input) and type(target) is np.ndarray and target.dtype == np.int64
            and target.shape == input.shape):
        return NotImplemented
    losses = np.empty(input.shape[0], dtype=np.float64)
    if not _kernels()["multilabel_margin"](input, target, input.dtype.type(1.0), losses):
        return NotImplemented  # the checked path raises "... 'target' is out of range"
    if reduction == "none":
        return losses.astype(input.dtype)
    return _reduced(float(losses.sum()), losses.shape[0], reduction, input.dtype)


def multi_margin_loss_native_first(input, target, *, p, margin, weight, reduction):
    """``multi_margin_loss`` of an ``(N, C)`` input by one compiled loop, or
    ``NotImplemented``."""
    if not (_plain_input(input) and type(target) is np.ndarray and target.dtype == np.int64
            and target.shape == input.shape[:1] and p in (1, 2)
            and type(margin) in (int, float)):
        return NotImplemented
    kernel_weight = _kernel_weight(weight, input)
    if kernel_weight is None:
        return NotImplemented
    weight, weighted = kernel_weight
    losses = np.empty(input.shape[0], dtype=np.float64)
    if not _kernels()["multi_margin"](input, target, weight, weighted,
                                      input.dtype.type(margin), p == 2, losses):
        return NotImplemented  # the checked path raises "target out of range"
    if reduction == "none":
        return losses.astype(input.dtype)
    return _reduced(float(losses.sum()), losses.shape[0], reduction, input.dtype)
