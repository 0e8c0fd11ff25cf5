"""The elementwise losses by one compiled pass each: the NumPy-side checks and declines.

In NumPy, each of these losses takes several whole-array passes and temporaries (a
transcendental function, a product, a where, a sum), and NumPy's float32 ``exp`` and
``log`` run scalar on CPUs without AVX-512. The kernels of
:mod:`.compiled.elementwise` read the inputs once, compute each element's loss with
torch's formula by the vectorised functions of :mod:`.compiled.elementary`, and write
the losses or add them up in float64, tile by tile on :func:`anyloss.get_threads`
threads.

These are registry kernels of stage ``'first'`` (:mod:`anyloss._registry`): they
take the public arguments (the reduction resolved) *unchecked*, and decline
(``NotImplemented``) every call but the plain one, so that anyloss's checked path
runs, and raises its own errors, for the rest:

- numba installed (without it they decline: the written-once formula runs);
- NumPy arrays (``type(a) is np.ndarray``) of one dtype, float32 or float64,
  C-contiguous, of one shape (the broadcasts each loss takes are listed with it),
  not empty; float16 arrays are taken as their float32 values, and the result rounded
  back (:func:`.float16.float16_in_float32`);
- options of the types anyloss takes (Python numbers), the reduction one of
  ``'none'``, ``'mean'``, ``'sum'`` (``kl_div``: and ``'batchmean'``);
- values anyloss accepts: ``binary_cross_entropy``'s input and target in
  ``[0, 1]``, ``gaussian_nll_loss``'s ``var`` not negative (checked in the same pass;
  a call that fails the check is declined after it).

The reduced losses are float64 sums rounded once to the input's dtype
(:func:`anyloss.backends.numpy.results.reduced_result`); the unreduced ones have the
input's shape and dtype (the rows' shape ``input.shape[:-1]`` for
``multilabel_soft_margin_loss``, ``(N,)`` for ``cosine_embedding_loss``). Below
:data:`PARALLEL_MIN` elements the kernels run serially on the calling thread.
"""

from __future__ import annotations

import math

import numpy as np

from anyloss.backends.numpy import compiled
from anyloss.backends.numpy.float16 import float16_in_float32
from anyloss.backends.numpy.results import reduced_result

__all__ = [
    "huber_loss", "smooth_l1_loss", "soft_margin_loss", "hinge_embedding_loss",
    "multilabel_soft_margin_loss", "kl_div", "poisson_nll_loss", "gaussian_nll_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_REDUCTIONS = ("none", "mean", "sum")
_NUMBER = (int, float)

#: Elements below which a kernel runs serially (a parallel launch costs some microseconds).
PARALLEL_MIN = 1 << 16

#: binary_cross_entropy's lower clamp of its logarithms (torch's).
_LOG_FLOOR = -100.0

#: cosine_embedding_loss's epsilon: torch's EPSILON = 1e-12 as the float32 anyloss adds.
_COSINE_EPSILON = float(np.float32(1e-12))

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _number(value) -> bool:
    """A Python int or float (not bool, not an array)."""
    return type(value) in _NUMBER


def _plain(*arrays) -> np.dtype | None:
    """The common dtype of ``arrays`` when they are plain: NumPy arrays of one float dtype,
    C-contiguous, of one shape, not empty, numba present; else ``None``."""
    if not compiled.HAVE_NUMBA:
        return None
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype not in _FLOATS or first.size == 0:
        return None
    for a in arrays:
        if (type(a) is not np.ndarray or a.dtype != first.dtype or a.shape != first.shape
                or not a.flags.c_contiguous):
            return None
    return first.dtype


def _mode(operand, shape: tuple):
    """``(flat operand, mode)`` of a broadcast operand against ``shape`` (see
    :mod:`.compiled.elementwise`), or ``None`` for a layout the kernels do not take."""
    kernels = compiled.load("elementwise")
    if operand.ndim > len(shape) or not operand.flags.c_contiguous:
        return None
    flat = operand.reshape(-1)
    if operand.shape == shape:
        return flat, kernels.FULL
    if operand.size == 1:
        return flat, kernels.SCALAR
    columns = shape[-1]
    core = operand.shape
    while core and core[0] == 1:
        core = core[1:]
    if core == (columns,):
        return flat, kernels.COLUMN
    if operand.ndim == len(shape) and operand.shape[-1] == 1 and operand.shape[:-1] == shape[:-1]:
        return flat, kernels.ROW
    return None


def _row_length(shape: tuple, *modes: int) -> int:
    """The segment length of the kernels: the last axis where an operand is taken per column
    or per row, else the whole array (one segment per tile)."""
    kernels = compiled.load("elementwise")
    n = math.prod(shape)
    if any(m in (kernels.COLUMN, kernels.ROW) for m in modes):
        return shape[-1] if shape else 1
    return n


def _launcher(kernel, n: int):
    """The serial copy of ``kernel`` below :data:`PARALLEL_MIN` elements, else the kernel
    (parallel on ``get_threads()`` threads)."""
    return kernel.serial if n < PARALLEL_MIN else kernel


def _flat_call(name, x, y, reduction, params, count=None):
    """Run flat kernel ``name`` over ``x`` and ``y`` (same shape, plain) with the scalar
    parameters ``params``; the unreduced losses or the reduced result (``'mean'``:
    divided by ``count``, the number of elements by default)."""
    kernels = compiled.load("elementwise")
    n = x.size
    unreduced = reduction == "none"
    out = np.empty(x.shape if unreduced else 0, dtype=x.dtype)
    partials = np.zeros(kernels.n_tiles(n), dtype=np.float64)
    _launcher(getattr(kernels, name), n)(x.reshape(-1), y.reshape(-1), *params,
                                         out.reshape(-1), partials, unreduced)
    if unreduced:
        return out
    return reduced_result(float(partials.sum()), n if count is None else count, reduction,
                          x.dtype)


# --- regression -----------------------------------------------------------------------------


@float16_in_float32
def huber_loss(input, target, *, reduction, delta, weight):
    """``huber_loss`` by one pass, or ``NotImplemented`` (a weight, ``delta <= 0``)."""
    dtype = _plain(input, target)
    if (dtype is None or weight is not None or reduction not in _REDUCTIONS
            or not _number(delta) or not delta > 0):
        return NotImplemented
    return _flat_call("huber", input, target, reduction,
                      (dtype.type(delta), dtype.type(0.5)))


@float16_in_float32
def smooth_l1_loss(input, target, *, reduction, beta):
    """``smooth_l1_loss`` by one pass, or ``NotImplemented``: for ``beta < 0``, and for
    ``beta = 0``, which is ``l1_loss`` itself in torch and in anyloss (the same number,
    summed in the same order)."""
    dtype = _plain(input, target)
    if dtype is None or reduction not in _REDUCTIONS or not _number(beta) or not beta > 0:
        return NotImplemented
    return _flat_call("smooth_l1", input, target, reduction,
                      (dtype.type(beta), dtype.type(0.5)))


# --- margin ---------------------------------------------------------------------------------


@float16_in_float32
def soft_margin_loss(input, target, *, reduction):
    """``soft_margin_loss`` by one pass, or ``NotImplemented``."""
    if _plain(input, target) is None or reduction not in _REDUCTIONS:
        return NotImplemented
    return _flat_call("soft_margin", input, target, reduction, ())


@float16_in_float32
def hinge_embedding_loss(input, target, *, margin, reduction):
    """``hinge_embedding_loss`` by one pass (a target of the input's dtype), or
    ``NotImplemented``."""
    dtype = _plain(input, target)
    if dtype is None or reduction not in _REDUCTIONS or not _number(margin):
        return NotImplemented
    return _flat_call("hinge_embedding", input, target, reduction,
                      (dtype.type(margin), dtype.type(0.0)))


@float16_in_float32
def multilabel_soft_margin_loss(input, target, weight, *, reduction):
    """``multilabel_soft_margin_loss`` of ``(..., C)`` logits (2 or more axes) and targets of
    their shape, with a ``(C,)`` weight or none, or ``NotImplemented``. Unreduced: shape
    ``input.shape[:-1]``."""
    dtype = _plain(input, target)
    if dtype is None or reduction not in _REDUCTIONS or input.ndim < 2:
        return NotImplemented
    c = input.shape[-1]
    if weight is None:
        weight = np.ones(c, dtype=dtype)
    elif not (type(weight) is np.ndarray and weight.dtype == dtype and weight.shape == (c,)
              and weight.flags.c_contiguous):
        return NotImplemented
    kernels = compiled.load("elementwise")
    rows = input.size // c
    unreduced = reduction == "none"
    out = np.empty(input.shape[:-1] if unreduced else 0, dtype=dtype)
    partials = np.zeros(-(-rows // kernels.rows_per_tile(c)), dtype=np.float64)
    _launcher(kernels.multilabel_soft_margin, input.size)(
        input.reshape(rows, c), target.reshape(rows, c), weight, dtype.type(0.0),
        dtype.type(1.0), out.reshape(-1), partials, unreduced)
    if unreduced:
        return out
    return reduced_result(float(partials.sum()), rows, reduction, dtype)


# --- probabilistic --------------------------------------------------------------------------


@float16_in_float32
def kl_div(input, target, *, reduction, log_target):
    """``kl_div`` by one pass (every reduction, ``'batchmean'`` included), or
    ``NotImplemented``."""
    dtype = _plain(input, target)
    if (dtype is None or reduction not in (*_REDUCTIONS, "batchmean")
            or type(log_target) is not bool):
        return NotImplemented
    if reduction == "batchmean":
        count = input.shape[0] if input.ndim else 1
        return _flat_call("kl_div", input, target, "mean", (log_target, dtype.type(0.0)),
                          count=count)
    return _flat_call("kl_div", input, target, reduction, (log_target, dtype.type(0.0)))


@float16_in_float32
def poisson_nll_loss(input, target, *, log_input, full, eps, reduction):
    """``poisson_nll_loss`` by one pass (``log_input``, ``full``, ``eps``), or
    ``NotImplemented``."""
    dtype = _plain(input, target)
    if (dtype is None or reduction not in _REDUCTIONS or type(log_input) is not bool
            or type(full) is not bool or not _number(eps)):
        return NotImplemented
    t = dtype.type
    return _flat_call("poisson_nll", input, target, reduction,
                      (log_input, full, t(eps), t(0.0), t(1.0), t(0.5), t(2 * math.pi)))


@float16_in_float32
def gaussian_nll_loss(input, target, var, *, full, eps, reduction):
    """``gaussian_nll_loss`` by one pass, or ``NotImplemented``.

    ``var``: a Python float, or an array of the input's dtype and shape, of its shape
    without the last axis, or of its shape with a last axis of 1. A negative ``var`` is
    declined (anyloss raises ``"var has negative entry/entries"``).
    """
    dtype = _plain(input, target)
    if (dtype is None or reduction not in _REDUCTIONS or type(full) is not bool
            or not _number(eps)):
        return NotImplemented
    kernels = compiled.load("elementwise")
    t = dtype.type
    shape = input.shape
    log_scalar = t(0.0)
    if type(var) is float:
        clamped = max(var, eps)
        if not (var >= 0 and clamped > 0):  # negative or nan var, or log(0): the checked path
            return NotImplemented
        flat, mode, log_scalar = np.full(1, clamped, dtype=dtype), kernels.SCALAR, t(
            math.log(clamped))
    else:
        if type(var) is not np.ndarray or var.dtype != dtype or not var.flags.c_contiguous:
            return NotImplemented
        if var.shape == shape:
            flat, mode = var.reshape(-1), kernels.FULL
        elif shape and (var.shape == shape[:-1]
                        or (var.shape[:-1] == shape[:-1] and var.ndim == len(shape)
                            and var.shape[-1] == 1)):
            flat, mode = var.reshape(-1), kernels.ROW
        else:
            return NotImplemented
    n = input.size
    unreduced = reduction == "none"
    out = np.empty(shape if unreduced else 0, dtype=dtype)
    tiles = kernels.n_tiles(n)
    partials = np.zeros(tiles, dtype=np.float64)
    negative = np.zeros(tiles, dtype=np.bool_)
    _launcher(kernels.gaussian_nll, n)(
        input.reshape(-1), target.reshape(-1), flat, mode, _row_length(shape, mode),
        log_scalar, t(eps), t(0.5), t(_HALF_LOG_TWO_PI if full else 0.0), out.reshape(-1),
        partials, negative, unreduced)
    if negative.any():
        return NotImplemented
    if unreduced:
        return out
    return reduced_result(float(partials.sum()), n, reduction, dtype)


# --- binary classification ------------------------------------------------------------------


def _weight_operand(weight, dtype, shape):
    """``(flat weight, mode, weighted)`` for the binary cross entropies, or ``None``: a
    weight of another dtype or a layout the kernels do not take."""
    if weight is None:
        return np.ones(1, dtype=dtype), compiled.load("elementwise").SCALAR, False
    if type(weight) is not np.ndarray or weight.dtype != dtype:
        return None
    taken = _mode(weight, shape)
    return None if taken is None else (*taken, True)


@float16_in_float32
def binary_cross_entropy(input, target, weight, *, reduction):
    """``binary_cross_entropy`` by one pass, or ``NotImplemented``. ``weight``: none, or of
    the input's dtype and shape, one value per position of the last axis, one per row
    (last axis 1) or a single value. A value outside ``[0, 1]`` (or nan) is declined
    (anyloss raises)."""
    dtype = _plain(input, target)
    if dtype is None or reduction not in _REDUCTIONS:
        return NotImplemented
    shape = input.shape
    weighting = _weight_operand(weight, dtype, shape)
    if weighting is None:
        return NotImplemented
    w, w_mode, weighted = weighting
    kernels = compiled.load("elementwise")
    n = input.size
    out = np.empty(shape if reduction == "none" else 0, dtype=dtype)
    tiles = kernels.n_tiles(n)
    partials = np.zeros(tiles, dtype=np.float64)
    outside = np.zeros(tiles, dtype=np.bool_)
    _launcher(kernels.binary_cross_entropy, n)(
        input.reshape(-1), target.reshape(-1), w, w_mode, weighted, _row_length(shape, w_mode),
        dtype.type(_LOG_FLOOR), dtype.type(1.0), out.reshape(-1), partials, outside)
    if outside.any():
        return NotImplemented  # the checked path raises "all elements of ... between 0 and 1"
    if reduction == "none":
        return out
    return reduced_result(float(partials.sum()), n, reduction, dtype)


@float16_in_float32
def binary_cross_entropy_with_logits(input, target, weight, pos_weight, *, reduction):
    """``binary_cross_entropy_with_logits`` by one pass, or ``NotImplemented``. ``weight``
    and ``pos_weight``: none, or of the input's dtype and of one of the layouts
    :func:`binary_cross_entropy` takes (``pos_weight`` typically one per class of the last
    axis)."""
    dtype = _plain(input, target)
    if dtype is None or reduction not in _REDUCTIONS:
        return NotImplemented
    shape = input.shape
    weighting = _weight_operand(weight, dtype, shape)
    positive = _weight_operand(pos_weight, dtype, shape)
    if weighting is None or positive is None:
        return NotImplemented
    w, w_mode, weighted = weighting
    p, p_mode, positive_weighted = positive
    kernels = compiled.load("elementwise")
    n = input.size
    out = np.empty(shape if reduction == "none" else 0, dtype=dtype)
    partials = np.zeros(kernels.n_tiles(n), dtype=np.float64)
    _launcher(kernels.binary_cross_entropy_with_logits, n)(
        input.reshape(-1), target.reshape(-1), w, w_mode, weighted, p, p_mode,
        positive_weighted, _row_length(shape, w_mode, p_mode), dtype.type(0.0),
        dtype.type(1.0), out.reshape(-1), partials)
    if reduction == "none":
        return out
    return reduced_result(float(partials.sum()), n, reduction, dtype)


# --- embedding ------------------------------------------------------------------------------


@float16_in_float32
def cosine_embedding_loss(input1, input2, target, *, margin, reduction):
    """``cosine_embedding_loss`` of ``(N, D)`` pairs and an ``(N,)`` target (of the inputs'
    dtype, or int64), or ``NotImplemented``."""
    dtype = _plain(input1, input2)
    if (dtype is None or input1.ndim != 2 or reduction not in _REDUCTIONS
            or not _number(margin) or type(target) is not np.ndarray
            or target.dtype not in (dtype, np.dtype(np.int64))
            or target.shape != input1.shape[:1] or not target.flags.c_contiguous):
        return NotImplemented
    kernels = compiled.load("elementwise")
    rows, dim = input1.shape
    unreduced = reduction == "none"
    out = np.empty(rows if unreduced else 0, dtype=dtype)
    partials = np.zeros(-(-rows // kernels.rows_per_tile(dim)), dtype=np.float64)
    t = dtype.type
    _launcher(kernels.cosine_embedding, input1.size)(
        input1, input2, target, t(margin), t(_COSINE_EPSILON), t(0.0), t(1.0), out, partials,
        unreduced)
    if unreduced:
        return out
    return reduced_result(float(partials.sum()), rows, reduction, dtype)
