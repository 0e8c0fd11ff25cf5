"""The one rule for the NumPy backend's 0-d results: a NumPy scalar of the loss's dtype.

NumPy's own reductions return scalars (``np.float64``), and so does anyloss's
written-once path on NumPy arrays; every kernel of the backend returns its
reduced losses through :func:`reduced_result`, so that the type of a result
never depends on which path computed it or on the input's size.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["reduced_result"]


def reduced_result(total: float, count: float, reduction: str, dtype) -> np.generic:
    """``total`` (``'sum'``) or ``total / count`` (``'mean'``, nan for ``count == 0``) as a
    NumPy scalar of ``dtype``.

    >>> reduced_result(3.0, 2.0, "mean", np.dtype(np.float32))
    np.float32(1.5)
    >>> reduced_result(0.0, 0.0, "mean", np.dtype(np.float64))
    np.float64(nan)
    """
    scalar = dtype.type if isinstance(dtype, np.dtype) else np.dtype(dtype).type
    if reduction == "sum":
        return scalar(total)
    return scalar(total / count if count != 0 else math.nan)
