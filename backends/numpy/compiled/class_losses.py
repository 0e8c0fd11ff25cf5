"""Class-loss kernels, compiled by numba: one loop per call reads, checks and adds up
(``multi_margin_loss``, whose work grows as N x C, checks its targets first and then
runs its rows in parallel).

``nll_loss`` reads one value per row, ``multi_margin_loss`` compares a row's
target class with the others and ``multilabel_margin_loss`` its listed classes
with the others, as torch's CPU kernels do. Each loop reports a target value
anyloss would reject instead of computing with it; the entry points in
:mod:`anyloss.backends.numpy.class_losses` then decline.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from anyloss.backends.numpy.compiled.parallel import parallel_kernel


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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


#: Reassociation lets LLVM vectorise a row's sum; no ``nnan``/``ninf``, so that a nan
#: ``z`` still fails ``z > 0`` and is dropped, as in torch's loop.
_ROW_SUM_FASTMATH = {"reassoc", "nsz", "arcp"}


@numba.njit(cache=True, nogil=True)
def _classes_in_range(target, c):
    for i in range(target.shape[0]):
        if target[i] < 0 or target[i] >= c:
            return False
    return True


@parallel_kernel(cache=True, nogil=True, fastmath=_ROW_SUM_FASTMATH)
def _multi_margin_rows(x, target, weight, weighted, margin, squared, out):
    n, c = x.shape
    for i in prange(n):
        k = target[i]
        first = margin - x[i, k]
        row = x[i]
        total = 0.0
        for m in range(c):  # branch-free, so that LLVM vectorises it
            z = first + row[m]  # (margin - x_y) + x_m, in the input's dtype
            term = np.float64(z * z if squared else z)
            total += term if (z > 0) & (m != k) else 0.0
        loss = total / c
        out[i] = loss * weight[k] if weighted else loss


def multi_margin(x, target, weight, weighted, margin, squared, out):
    """Fills ``out`` (N,) with each row's loss (float64), rows in parallel on
    ``get_threads()`` threads (each row's sum by one thread, so the result does not
    depend on the thread count); False, and nothing computed, if a target is not a
    class in ``[0, C)``."""
    if not _classes_in_range(target, x.shape[1]):
        return False
    _multi_margin_rows(x, target, weight, weighted, margin, squared, out)
    return True
