"""Helpers shared by the tests: the tolerances, the torch oracle and the comparisons.

Test modules import them from here (``from helpers import ...``); the fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from anyloss.conformance.tolerances import tolerance

# The conformance suite's tolerances, so that the suite and the tests cannot drift apart.
FLOAT64 = tolerance("float64")
FLOAT32 = tolerance("float32")


def torch_oracle(loss: str, arrays: dict, options: dict, requires_grad=()):
    """``torch.nn.functional.<loss>`` on the same data, and the torch inputs it used."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    tensors = {
        k: torch.tensor(a, requires_grad=k in requires_grad) for k, a in arrays.items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(F, loss)(**tensors, **options), tensors


def call_quietly(func, *args, **kwargs):
    """Call ``func`` with the UserWarnings the case is known to raise silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return func(*args, **kwargs)


def assert_close(actual: np.ndarray, expected: np.ndarray, **tolerance) -> None:
    """Element-by-element comparison, shapes and nan positions included."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, equal_nan=True, **tolerance)


class CountingScheduler:
    """A Dask scheduler that runs graphs synchronously and counts how often it is asked."""

    def __init__(self):
        self.computes = 0

    def __call__(self, dsk, keys, **kwargs):
        import dask

        self.computes += 1
        return dask.get(dsk, keys, **kwargs)
