"""float16 NumPy operands computed in float32, and the result rounded once to float16.

NumPy's float16 arithmetic runs one element at a time on CPUs without its float16
SIMD loops (AVX-512 FP16): each operation of a formula converts both operands to
float32 and its result back, element by element. The NumPy engine computes a float16
loss in float32 instead, as torch's CPU kernels do (their ``opmath`` type), and rounds
the result to float16 once: the unreduced losses from float32, a reduced one from the
float32 that the loss rounds its sum to, as torch rounds its float32 accumulation. The
conversions are the compiled loops of :mod:`.compiled.half` where numba is installed,
NumPy's casts otherwise.

Three users:

- :func:`float16_in_float32` decorates the compiled kernels of :mod:`.elementwise`:
  their float32 kernel runs on the converted operands;
- :func:`float16_call`, the same for one call: the cross entropy of class probabilities
  (:mod:`.cross_entropy`);
- the ``'checked'`` kernels below, of the losses without a compiled kernel
  (``l1_loss``, ``mse_loss``, ``margin_ranking_loss``, ``triplet_margin_loss``): anyloss's
  own written-once formula, called again on the float32 values.

A call takes this route only where every array operand is a float16 ``numpy.ndarray``
(subclasses and mixed dtypes keep NumPy's promotion and the formula's own arithmetic).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from anyloss.backends.numpy import compiled

__all__ = ["float16_call", "float16_in_float32", "l1_loss", "mse_loss",
           "margin_ranking_loss", "triplet_margin_loss"]

_FLOAT16 = np.dtype(np.float16)


def _all_float16(args: tuple, kwargs: dict) -> bool:
    """Whether the first argument and every array argument are float16 NumPy arrays."""
    if type(args[0]) is not np.ndarray:
        return False
    return all(a.dtype == _FLOAT16 for a in (*args, *kwargs.values()) if type(a) is np.ndarray)


def _to_float32(value: Any) -> Any:
    """A float16 array's values in float32 (exact); anything else as it is."""
    if type(value) is not np.ndarray:
        return value
    if compiled.HAVE_NUMBA:
        return compiled.load("half").to_float32(value)
    return value.astype(np.float32)


def _to_float16(result: Any) -> Any:
    """A float32 result (an array, a reduced NumPy scalar, or a tuple of them) rounded to
    float16."""
    if type(result) is tuple:
        return tuple(map(_to_float16, result))
    if type(result) is not np.ndarray:
        return result.astype(_FLOAT16)
    if compiled.HAVE_NUMBA:
        return compiled.load("half").to_float16(result)
    return result.astype(_FLOAT16)


def _in_float32(loss: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """``loss`` of the float32 values of ``args`` and ``kwargs``, rounded to float16
    (``NotImplemented`` passed through)."""
    result = loss(*map(_to_float32, args), **{k: _to_float32(v) for k, v in kwargs.items()})
    return result if result is NotImplemented else _to_float16(result)


def float16_call(loss: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``loss(*args, **kwargs)`` on the float32 values of float16 operands, rounded to
    float16 (a tuple result element by element); ``NotImplemented`` without numba or where
    not every array operand is a float16 NumPy array. For a NumPy kernel whose compiled
    code takes float32 and float64 only (the cross entropy of class probabilities)."""
    if not compiled.HAVE_NUMBA or not _all_float16(args, kwargs):
        return NotImplemented
    return _in_float32(loss, args, kwargs)


def float16_in_float32(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a compiled kernel of :mod:`.elementwise`: where every array operand is
    float16, the kernel runs on their float32 values and its result is rounded to
    float16 (see the module); other calls reach the kernel as they are."""

    @functools.wraps(kernel)
    def in_float32(*args: Any, **kwargs: Any) -> Any:
        if not compiled.HAVE_NUMBA or not _all_float16(args, kwargs):
            return kernel(*args, **kwargs)
        return _in_float32(kernel, args, kwargs)

    return in_float32


def _formula_in_float32(name: str, *, same_shapes: bool = False) -> Callable[..., Any]:
    """The ``'checked'`` kernel of the public loss ``name``: for float16 operands, the
    loss of their float32 values (anyloss's formula, on NumPy's float32 arithmetic),
    rounded to float16; every other call declined. With ``same_shapes``, also the calls
    whose first two arrays differ in shape (``l1_loss`` and ``mse_loss`` warn of those:
    called again, the loss would warn twice)."""

    def kernel(*args: Any, **kwargs: Any) -> Any:
        if not _all_float16(args, kwargs):
            return NotImplemented
        if same_shapes and args[0].shape != np.shape(args[1]):
            return NotImplemented
        import anyloss

        return _in_float32(getattr(anyloss, name), args, kwargs)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = f"``anyloss.{name}`` of float16 NumPy operands, computed in float32."
    return kernel


l1_loss = _formula_in_float32("l1_loss", same_shapes=True)
mse_loss = _formula_in_float32("mse_loss", same_shapes=True)
margin_ranking_loss = _formula_in_float32("margin_ranking_loss")
triplet_margin_loss = _formula_in_float32("triplet_margin_loss")
