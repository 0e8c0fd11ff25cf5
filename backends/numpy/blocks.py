"""NumPy's building blocks of the generic formulas (registry stage ``'block'``).

NumPy has no autograd, so these need no gradient care: they save passes and
temporaries (ufuncs writing into their own output) and skip array-api-compat's
wrappers. Each is declared beside the block it stands in for
(:mod:`anyloss._ops`, :mod:`anyloss._reduction`, :mod:`anyloss._validate`,
:mod:`anyloss._blocked`).
"""

from __future__ import annotations

import numpy as np


def _fresh(a) -> bool:
    """Whether a ufunc result is an array that may be written in place (not a scalar)."""
    return type(a) is np.ndarray


def _log1p_exp_minus_abs(x):
    """``log1p(exp(-|x|))``, the correction term of softplus and log-sigmoid."""
    out = np.abs(x)
    if not _fresh(out):
        return np.log1p(np.exp(-out))
    np.negative(out, out=out)
    np.exp(out, out=out)
    return np.log1p(out, out=out)


def log_sigmoid(x):
    """``log(sigmoid(x))`` as ``min(x, 0) - log1p(exp(-|x|))``, in place."""
    # min(x, 0) - log1p(exp(-|x|)): the arithmetic of -logaddexp(0, -x), but with
    # vectorised exp and log1p (NumPy's logaddexp loop is several times slower).
    return np.subtract(np.minimum(x, 0.0), _log1p_exp_minus_abs(x))


def softplus(x):
    """``log(1 + exp(x))`` as ``max(x, 0) + log1p(exp(-|x|))``, in place."""
    return np.add(np.maximum(x, 0.0), _log1p_exp_minus_abs(x))


def xlogy(x, y):
    """``x * log(y)``, 0 where ``x == 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        product = x * np.log(y)
    return np.where(x == 0, 0.0, product)


def clamped_log(x, floor):
    """``max(log(x), floor)``, clamped in place."""
    with np.errstate(divide="ignore"):
        out = np.log(x)
    return np.maximum(out, floor, out=out) if _fresh(out) else np.maximum(out, floor)


def clamped_log1p(x, floor):
    """``max(log1p(x), floor)``, clamped in place."""
    with np.errstate(divide="ignore"):
        out = np.log1p(x)
    return np.maximum(out, floor, out=out) if _fresh(out) else np.maximum(out, floor)


def sum_of_products(a, b, axis):
    """``sum(a * b, axis)`` by ``np.vecdot`` (NumPy 2; declines before)."""
    if not hasattr(np, "vecdot"):  # NumPy < 2
        return NotImplemented
    return np.vecdot(a, b, axis=axis)


def mean(x):
    """The mean of all elements, as ``np.mean`` computes it."""
    # np.mean's own arithmetic (a pairwise sum, then one division in the sum's dtype)
    # without its Python-level argument handling, which costs more than the sum on
    # small arrays.
    total = np.add.reduce(x, axis=None)
    return total.dtype.type(total / x.size)


def log_softmax(x, axis):
    """Log-softmax along ``axis`` (the generic formula's arithmetic), reusing memory."""
    # The generic formula's arithmetic, (x - shift) - log(sum(exp(x - shift))), with the
    # shift the row maximum (0 for a non-finite one); the exponentials and the final
    # subtraction reuse their operands' memory. A row of -inf (log 0, then -inf + inf) or
    # holding +inf or nan gives -inf and nan as torch gives them, without NumPy's warnings
    # (torch has none).
    if x.size == 0 or type(x) is not np.ndarray:
        return NotImplemented
    peak = np.maximum.reduce(x, axis=axis, keepdims=True)
    if not np.isfinite(peak).all():
        peak = np.where(np.isfinite(peak), peak, 0.0).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        shifted = np.subtract(x, peak)
        exp = np.exp(shifted)
        total = np.add.reduce(exp, axis=axis, keepdims=True)
        return np.subtract(shifted, np.log(total, out=total), out=shifted)


def take_along_axis(x, indices, axis):
    """``take_along_axis`` of a C-contiguous ``x`` by one flat ``take``."""
    # For a C-contiguous x, one flat ``take`` at computed offsets: NumPy's
    # take_along_axis builds an index array per axis and fancy-indexes with all of them.
    if (type(x) is not np.ndarray or not x.flags.c_contiguous or indices.ndim != x.ndim
            or x.ndim == 0):
        return NotImplemented
    axis %= x.ndim
    pairs = enumerate(zip(indices.shape, x.shape, strict=True))
    if any(i != n for d, (i, n) in pairs if d != axis):
        return NotImplemented  # broadcasting to do: NumPy's own
    offsets = indices.astype(np.intp, copy=False)
    step = x.strides[axis] // x.itemsize
    if step != 1:
        offsets = offsets * step
    for d, n in enumerate(x.shape):
        if d != axis and n != 1:
            shape = [1] * x.ndim
            shape[d] = n
            offsets = offsets + (np.arange(n, dtype=np.intp) * (x.strides[d] // x.itemsize)
                                 ).reshape(shape)
    return x.reshape(-1).take(offsets)


def sum_along(x, axis):
    """``np.sum`` of a floating array along ``axis``, without its wrapper."""
    # np.sum's own reduction without its Python-level argument handling; floating
    # arrays only (np.add.reduce of booleans is a logical or, not a count).
    if type(x) is not np.ndarray or x.dtype.kind not in "fc":
        return NotImplemented
    return np.add.reduce(x, axis=axis)


def extrema(x):
    """``(min, max)`` of ``x`` as Python numbers."""
    return np.minimum.reduce(x, axis=None).item(), np.maximum.reduce(x, axis=None).item()


#: Elements per block of anyloss._blocked.reduce_blockwise: 512 KiB of float32, within a
#: core's L2 cache (the measurement is in benchmarks/README.md).
BLOCK_ELEMENTS = 1 << 17


def blockwise_elements(arrays):
    """The block size of :func:`anyloss._blocked.reduce_blockwise` on NumPy arrays."""
    return BLOCK_ELEMENTS


def clamp_min_identity_gradient(x, lower):
    """``max(x, lower)``: NumPy has no gradient to keep."""
    return np.maximum(x, lower)


def relu(x):
    """``max(x, 0)``."""
    return np.maximum(x, 0.0)


positive_part = relu
clip = np.clip
clamp_min = np.maximum
sqrt_zero_gradient = np.sqrt
