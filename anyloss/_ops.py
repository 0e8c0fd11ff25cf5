"""Numerically stable building blocks, written against the array API.

Each function takes the namespace ``xp`` first and works elementwise with
broadcasting. The formulas are chosen so that neither the value nor the
gradient (through torch autograd or ``jax.grad``) produces an inf or nan that
the mathematical function does not have.

Where a library has its own kernel for a block (``torch.nn.functional.logsigmoid``,
``torch.special.xlogy``, ``torch.logsumexp``, ``jax.nn.log_sigmoid``, NumPy's
``vecdot``...), the block calls it: each block declares its kernels in the
registry (:mod:`anyloss._registry`, stage ``'block'``) just above its
definition. A kernel may return ``NotImplemented`` to decline a call (e.g. one
that autograd must see through); the portable formula written here then runs.
Kernels follow the gradient conventions of torch's own losses, so that gradients
through anyloss stay equal to torch's. With fast paths at level ``'none'`` only
the portable formulas run.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from anyloss._array import (
    indexing_dtype,
    needs_float32_accumulation,
    records_gradient,
    stop_gradient,
)
from anyloss._registry import Kernel, call, declare

__all__ = [
    "softplus",
    "log_sigmoid",
    "xlogy",
    "relu",
    "positive_part",
    "clip",
    "clamp_min",
    "clamp_min_identity_gradient",
    "with_slope",
    "slope_term",
    "absolute",
    "sqrt_zero_gradient",
    "clamped_log",
    "clamped_log1p",
    "sum_of_products",
    "logsumexp",
    "log_softmax",
    "take_along_axis",
]


def _declare_block(function: str, **by_library: tuple[str, ...]) -> None:
    """Declare the kernels of block ``function``: ``library=(target, engine[, accepts])``."""
    declare(*(Kernel(function, library, "block", *spec) for library, spec in by_library.items()))


def _block(xp: ModuleType, function: str, *args: Any) -> Any:
    """The library's kernel of block ``function`` applied to ``args``, or ``NotImplemented``."""
    return call("block", function, xp, *args)



_declare_block(
    "softplus",
    torch=("torch:softplus", "-F.logsigmoid(-x)"),
    numpy=("numpy.blocks:softplus", "max(x, 0) + log1p(exp(-|x|)), ufuncs in place"),
    jax=("jax:softplus", "jax.nn.softplus"),
)


def softplus(xp: ModuleType, x: Any) -> Any:
    """``log(1 + exp(x))``, finite for every finite ``x``.

    Computed as ``logaddexp(0, x)``, which never overflows: for ``x = 1000``
    it gives 1000, where the naive formula gives inf.

    >>> import array_api_strict as xp
    >>> softplus(xp, xp.asarray([-1000.0, 0.0, 1000.0]))
    Array([0.00000000e+00, 6.93147181e-01, 1.00000000e+03], dtype=array_api_strict.float64)
    """
    out = _block(xp, "softplus", x)
    if out is not NotImplemented:
        return out
    return xp.logaddexp(0.0, x)


_declare_block(
    "log_sigmoid",
    torch=("torch:log_sigmoid", "F.logsigmoid"),
    numpy=("numpy.blocks:log_sigmoid", "min(x, 0) - log1p(exp(-|x|)), ufuncs in place"),
    jax=("jax:log_sigmoid", "jax.nn.log_sigmoid"),
)


def log_sigmoid(xp: ModuleType, x: Any) -> Any:
    """``log(1 / (1 + exp(-x)))``, finite for every finite ``x``: ``-softplus(-x)``."""
    out = _block(xp, "log_sigmoid", x)
    if out is not NotImplemented:
        return out
    return -softplus(xp, -x)


_declare_block(
    "xlogy",
    torch=("torch:xlogy", "torch.special.xlogy"),
    numpy=("numpy.blocks:xlogy", "x * log(y), one where"),
)


def xlogy(xp: ModuleType, x: Any, y: Any) -> Any:
    """``x * log(y)``, defined as 0 wherever ``x == 0`` (even where ``y == 0``).

    Uses the double-``where`` pattern: the logarithm only ever sees ``y`` where
    ``x != 0``, so ``log(0)`` cannot put a nan into the gradient of the
    masked-out elements of the value. The gradients are torch's: ``log(y)`` (0
    where ``x == 0``) and ``x / y``, which is nan at ``x = y = 0``, as in torch's
    own ``kl_div``. (torch's native ``xlogy``, used for torch arrays, also gives
    ``nan`` for ``xlogy(0, nan)``.)

    >>> import array_api_strict as xp
    >>> xlogy(xp, xp.asarray([0.0, 2.0]), xp.asarray([0.0, 3.0]))
    Array([0.        , 2.19722458], dtype=array_api_strict.float64)
    """
    out = _block(xp, "xlogy", x, y)
    if out is not NotImplemented:
        return out
    x_records, y_records = records_gradient(x), records_gradient(y)
    x_value = stop_gradient(x) if x_records else x
    y_value = stop_gradient(y) if y_records else y
    zero = x_value == 0
    log_y = xp.log(xp.where(zero, 1.0, y_value))
    value = xp.where(zero, 0.0, x_value * log_y)
    # torch's gradients (derivatives.yaml): xlogy(x != 0, y) and x / y, the latter nan
    # at x = y = 0 (as torch's kl_div has it); the value's own would be 0 there.
    if x_records:
        value = with_slope(xp, value, x, xp.where(zero, 0.0, log_y))
    if y_records:
        value = with_slope(xp, value, y, x_value / y_value)
    return value


_declare_block(
    "absolute",
    torch=("torch:absolute", "torch.abs"),
)


def absolute(xp: ModuleType, x: Any) -> Any:
    """``|x|`` elementwise, with torch's derivative ``sign(x)``: 0 at exactly 0.

    JAX's ``abs`` has derivative 1 at 0; where autodiff records, the portable
    formula puts 0 there with a ``where`` (torch's ``abs``, its block, needs none).
    """
    if not records_gradient(x):  # the value alone: abs itself, with no registry look-up
        return xp.abs(x)
    out = _block(xp, "absolute", x)
    if out is not NotImplemented:
        return out
    return xp.where(x == 0, 0.0, xp.abs(x))


_declare_block(
    "relu",
    torch=("torch:relu", "torch.clamp_min (gradient 1 at 0)"),
    numpy=("numpy.blocks:relu", "np.maximum"),
)


def relu(xp: ModuleType, x: Any) -> Any:
    """``max(x, 0)`` elementwise, the hinge of the margin losses.

    torch's kernel is ``clamp_min``, whose gradient at exactly 0 is 1, as in
    torch's own margin losses; the portable formula gives the same gradient where
    autodiff records.
    """
    out = _block(xp, "relu", x)
    if out is not NotImplemented:
        return out
    if records_gradient(x):
        # clamp_min's gradient, 1 at 0 (maximum's is 1/2 there, on JAX and torch alike)
        return xp.where(x < 0, 0.0, x)
    return xp.maximum(x, 0.0)


_declare_block(
    "positive_part",
    torch=("torch:positive_part", "torch.relu"),
    numpy=("numpy.blocks:positive_part", "np.maximum"),
    jax=("jax:positive_part", "jax.nn.relu"),
)


def positive_part(xp: ModuleType, x: Any) -> Any:
    """``max(x, 0)`` elementwise, with gradient 0 at exactly 0 (and 1 above).

    The hinge of kernels that add only strictly positive terms (torch's
    ``multilabel_margin_loss``): one pass where the library has ``relu``, instead
    of a comparison and a ``where``.
    """
    out = _block(xp, "positive_part", x)
    if out is not NotImplemented:
        return out
    return xp.where(x > 0, x, 0.0)


_declare_block(
    "clip",
    torch=("torch:clip", "torch.clamp"),
    numpy=("numpy.blocks:clip", "np.clip"),
)


def clip(xp: ModuleType, x: Any, lower: float, upper: float) -> Any:
    """``min(max(x, lower), upper)`` for Python numbers ``lower <= upper``."""
    out = _block(xp, "clip", x, lower, upper)
    if out is not NotImplemented:
        return out
    if hasattr(xp, "clip"):
        return xp.clip(x, lower, upper)
    return xp.minimum(xp.maximum(x, lower), upper)


_declare_block(
    "clamp_min_identity_gradient",
    torch=("torch:clamp_min_identity_gradient", "clamp of a clone under no_grad"),
    numpy=("numpy.blocks:clamp_min_identity_gradient", "np.maximum"),
)


def clamp_min_identity_gradient(xp: ModuleType, x: Any, lower: float) -> Any:
    """``max(x, lower)`` in value, while the gradient is that of ``x`` itself.

    This is torch's "clamp under ``no_grad``" idiom (used by
    ``gaussian_nll_loss`` for its ``eps``) in a form that works for every
    library: below ``lower`` the value is ``(x - stop_gradient(x)) + lower``,
    which equals ``lower`` exactly and has derivative 1 with respect to ``x``.
    """
    out = _block(xp, "clamp_min_identity_gradient", x, lower)
    if out is not NotImplemented:
        return out
    return xp.where(x < lower, (x - stop_gradient(x)) + lower, x)


def with_slope(xp: ModuleType, value: Any, x: Any, slope: Any, *, finite: bool = False) -> Any:
    """``value`` unchanged, plus a derivative ``slope`` with respect to ``x``.

    For a loss differentiated by hand, as torch does for some: ``value`` is
    computed from values cut from autodiff (:func:`~anyloss._array.stop_gradient`)
    and ``slope``, cut too and of ``x``'s shape, is the derivative to give it;
    ``value`` broadcasts with ``x``. See :func:`slope_term`. With ``finite`` the
    caller promises that ``slope`` is finite wherever ``value`` is not nan, and the
    term is the plain ``(x - cut(x)) * slope`` (0 where ``x`` is infinite): five
    operations instead of a dozen.
    """
    if finite:
        return value + _difference_from_cut(xp, x) * slope
    return value + slope_term(xp, x, slope)


def _difference_from_cut(xp: ModuleType, x: Any) -> Any:
    """``x - cut(x)``: zero in value, derivative 1; 0 where ``x`` is infinite (inf - inf)."""
    cut = stop_gradient(x)
    return xp.where(xp.isfinite(cut), x - cut, 0.0)


def slope_term(xp: ModuleType, x: Any, slope: Any) -> Any:
    r"""Zeros of ``x``'s shape whose derivative with respect to ``x`` is ``slope``.

    The term is ``(x - cut(x)) * slope`` (``cut`` is
    :func:`~anyloss._array.stop_gradient`): exactly zero in value, ``slope`` in
    gradient. That product would be nan where ``slope`` is infinite or nan, so
    there the term is instead :math:`\pm\sqrt{d}` (both signs, summed, for nan)
    with :math:`d = x - \operatorname{cut}(x) = 0`: zero in value, and a
    derivative :math:`\pm\infty` (``inf - inf = nan``) scaled by the incoming
    gradient exactly as torch scales its own infinite slopes (to nan where that
    gradient is 0). The non-finite branch sees ``d`` only where it is used
    (double ``where``), so it adds no nan elsewhere. Where ``x`` itself is
    infinite, ``d`` is 0 and so is the slope attached (``x - cut(x)`` would be
    nan). Only formulas that autodiff records
    (:func:`~anyloss._array.records_gradient`) need it.
    """
    d = _difference_from_cut(xp, x)
    finite = xp.isfinite(slope)
    nan = xp.isnan(slope)
    root = xp.sqrt(xp.where(finite, 1.0, d))
    return (d * xp.where(finite, slope, 0.0)
            + xp.where((slope == math.inf) | nan, root, 0.0)
            - xp.where((slope == -math.inf) | nan, root, 0.0))


_declare_block(
    "clamped_log",
    torch=("torch:clamped_log", "torch.log, clamped in place", "not under autograd"),
    numpy=("numpy.blocks:clamped_log", "np.log, clamped in place"),
)


def clamped_log(xp: ModuleType, x: Any, floor: float) -> Any:
    """``max(log(x), floor)`` for ``x >= 0``, with a finite gradient where the clamp holds.

    The logarithm only sees ``x`` where it is above ``exp(floor)`` (double
    ``where``), so ``x = 0`` gives ``floor`` and a zero gradient, not nan.
    """
    out = _block(xp, "clamped_log", x, floor)
    if out is not NotImplemented:
        return out
    above = x > math.exp(floor)
    return xp.where(above, xp.log(xp.where(above, x, 1.0)), floor)


_declare_block(
    "clamped_log1p",
    torch=("torch:clamped_log1p", "torch.log1p, clamped in place", "not under autograd"),
    numpy=("numpy.blocks:clamped_log1p", "np.log1p, clamped in place"),
)


def clamped_log1p(xp: ModuleType, x: Any, floor: float) -> Any:
    """``max(log1p(x), floor)`` for ``x >= -1``, finite gradient where the clamp holds."""
    out = _block(xp, "clamped_log1p", x, floor)
    if out is not NotImplemented:
        return out
    above = x > math.expm1(floor)  # log1p(x) > floor  <=>  x > expm1(floor)
    return xp.where(above, xp.log1p(xp.where(above, x, 0.0)), floor)


_declare_block(
    "clamp_min",
    torch=("torch:clamp_min", "torch.clamp_min"),
    numpy=("numpy.blocks:clamp_min", "np.maximum"),
)


def clamp_min(xp: ModuleType, x: Any, lower: float) -> Any:
    """``max(x, lower)`` as torch's ``clamp_min``: nan stays nan, and the gradient at
    exactly ``lower`` passes through (derivative 1), unlike ``maximum``'s one half."""
    out = _block(xp, "clamp_min", x, lower)
    if out is not NotImplemented:
        return out
    return xp.where(x < lower, lower, x)


_declare_block(
    "sqrt_zero_gradient",
    torch=("torch:sqrt_zero_gradient", "torch.sqrt", "not under autograd"),
    numpy=("numpy.blocks:sqrt_zero_gradient", "np.sqrt"),
)


def sqrt_zero_gradient(xp: ModuleType, s: Any) -> Any:
    """``sqrt(s)`` for ``s >= 0`` whose gradient at ``s == 0`` is 0 instead of inf
    (a double ``where``), as torch's norms give at a zero vector."""
    out = _block(xp, "sqrt_zero_gradient", s)
    if out is not NotImplemented:
        return out
    zero = s == 0
    return xp.where(zero, 0.0, xp.sqrt(xp.where(zero, 1.0, s)))


_declare_block(
    "sum_of_products",
    torch=("torch:sum_of_products", "torch.linalg.vecdot"),
    numpy=("numpy.blocks:sum_of_products", "np.vecdot", "NumPy 2"),
)


def sum_of_products(xp: ModuleType, a: Any, b: Any, axis: int) -> Any:
    """``sum(a * b, axis)`` for real arrays that broadcast, in one call where the library
    has a dot-product kernel (NumPy's ``vecdot``, which keeps no ``a * b``; torch's)."""
    out = _block(xp, "sum_of_products", a, b, axis)
    if out is not NotImplemented:
        return out
    return xp.sum(a * b, axis=axis)


_declare_block(
    "logsumexp",
    torch=("torch:logsumexp", "torch.logsumexp"),
    jax=("jax:logsumexp", "jax.nn.logsumexp"),
)


def logsumexp(xp: ModuleType, x: Any, axis: int, keepdims: bool = False) -> Any:
    """``log(sum(exp(x), axis))``, shifted by the maximum so that nothing overflows.

    Rows whose maximum is infinite are shifted by 0 instead, so that a row of
    all ``-inf`` gives ``-inf`` (not nan) and ``+inf`` gives ``+inf``. float16 and
    bfloat16 rows are computed in float32 and rounded once: the log of a sum near 1
    rounded to float16 would keep only two of the result's digits.
    """
    if needs_float32_accumulation(x.dtype):
        return xp.astype(logsumexp(xp, xp.astype(x, xp.float32), axis, keepdims), x.dtype)
    out = _block(xp, "logsumexp", x, axis, keepdims)
    if out is not NotImplemented:
        return out
    peak = xp.max(x, axis=axis, keepdims=True)
    shift = xp.where(xp.isfinite(peak), peak, 0.0)
    shift = stop_gradient(shift)
    out = xp.log(xp.sum(xp.exp(x - shift), axis=axis, keepdims=True)) + shift
    return out if keepdims else xp.squeeze(out, axis=axis)


_declare_block(
    "log_softmax",
    torch=("torch:log_softmax", "F.log_softmax"),
    numpy=("numpy.blocks:log_softmax", "ufuncs in place", "non-empty ndarrays"),
)


def log_softmax(xp: ModuleType, x: Any, axis: int) -> Any:
    """Log-probabilities along ``axis``: ``(x - max) - log(sum(exp(x - max)))``.

    The maximum is subtracted first and the log-sum second; the shorter
    ``x - logsumexp(x)`` would add the maximum back before subtracting it and
    round the result to the spacing of floats near the maximum (at logits of
    1e4 in float32 that turns ``log 2`` into 0.69336). Rows whose maximum is
    infinite are shifted by 0. An empty ``x`` is returned as it is (Dask cannot
    take the maximum of an empty chunk). float16 and bfloat16 are computed in
    float32 and rounded once: ``log(1.0102)`` from a float16 sum is 5% off.
    """
    if needs_float32_accumulation(x.dtype):
        return xp.astype(log_softmax(xp, xp.astype(x, xp.float32), axis), x.dtype)
    out = _block(xp, "log_softmax", x, axis)
    if out is not NotImplemented:
        return out
    if any(n == 0 for n in x.shape):
        return x
    peak = xp.max(x, axis=axis, keepdims=True)
    shifted = x - stop_gradient(xp.where(xp.isfinite(peak), peak, 0.0))
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


_declare_block(
    "take_along_axis",
    torch=("torch:take_along_axis", "torch.gather or torch.take_along_dim"),
    numpy=("numpy.blocks:take_along_axis", "one flat take", "C-contiguous, no broadcasting"),
)


def take_along_axis(xp: ModuleType, x: Any, indices: Any, axis: int) -> Any:
    """``x`` gathered at integer ``indices`` along ``axis`` (shapes as ``take_along_axis``).

    ``indices`` has ``x``'s number of dimensions, size 1 along ``axis`` or more.
    Libraries without ``take_along_axis`` (Dask) get an equivalent one-hot
    selection: ``sum(where(indices == arange(C), x, 0))``, which builds a
    temporary of ``indices``'s shape times ``C``. Indices must be in range; any
    integer dtype works (they are cast to the library's indexing dtype, which
    torch requires).
    """
    out = _block(xp, "take_along_axis", x, indices, axis)
    if out is not NotImplemented:
        return out
    if hasattr(xp, "take_along_axis"):
        index_dtype = indexing_dtype(xp)
        if indices.dtype != index_dtype:
            indices = xp.astype(indices, index_dtype)
        return xp.take_along_axis(x, indices, axis=axis)
    axis = axis % x.ndim
    n_classes = x.shape[axis]
    # Move the gathered axis last, compare with every class, reduce it away.
    x_last = xp.moveaxis(x, axis, -1)
    idx_last = xp.moveaxis(indices, axis, -1)
    classes = xp.arange(n_classes, dtype=indices.dtype)
    hits = idx_last[..., None] == classes
    picked = xp.sum(xp.where(hits, x_last[..., None, :], 0.0), axis=-1)
    return xp.moveaxis(picked, -1, axis)
