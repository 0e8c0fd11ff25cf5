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


# --- gradients of a case (a catalogue case or anything with loss, arrays, options and
# differentiable), of the sum of its output weighted by a fixed, non-uniform cotangent ----


def cotangent(shape, seed: int = 0) -> np.ndarray:
    """A fixed, non-uniform weighting of an output, so that every element's gradient counts."""
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


def torch_reference_gradients(case, seed: int = 0) -> dict[str, np.ndarray]:
    """torch autograd through ``torch.nn.functional``: the oracle."""
    torch = pytest.importorskip("torch")
    out, tensors = torch_oracle(case.loss, case.arrays, case.options, case.differentiable)
    (out * torch.tensor(cotangent(tuple(out.shape), seed))).sum().backward()
    return {k: tensors[k].grad.numpy() for k in case.differentiable}


def anyloss_torch_gradients(case, seed: int = 0, *, fast: bool = True,
                            device: str = "cpu") -> dict[str, np.ndarray]:
    """torch autograd through anyloss, with fast paths on or fully off, tensors on ``device``."""
    import anyloss

    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(a, device=device, requires_grad=k in case.differentiable)
               for k, a in case.arrays.items()}
    with anyloss.fast_paths(enabled=fast):
        out = call_quietly(getattr(anyloss, case.loss), **tensors, **case.options)
    (out * torch.tensor(cotangent(tuple(out.shape), seed), device=device)).sum().backward()
    return {k: tensors[k].grad.cpu().numpy() for k in case.differentiable}


def anyloss_jax_gradients(case, seed: int = 0, *, jit: bool = False) -> dict[str, np.ndarray]:
    """``jax.grad`` through anyloss (under ``jax.jit`` with ``jit``); skips without JAX."""
    import anyloss
    from anyloss.conformance import namespaces

    try:
        jnp = namespaces.get("jax").xp
    except ImportError as exc:
        pytest.skip(str(exc))
    import jax

    fixed = {k: jnp.asarray(a) for k, a in case.arrays.items() if k not in case.differentiable}
    loss = getattr(anyloss, case.loss)

    def objective(fixed, *diff):
        out = call_quietly(loss, **fixed, **dict(zip(case.differentiable, diff, strict=True)),
                           **case.options)
        return jnp.sum(out * cotangent(out.shape, seed))

    grad = jax.grad(objective, argnums=tuple(range(1, len(case.differentiable) + 1)))
    if jit:
        grad = jax.jit(grad)
    grads = grad(fixed, *(jnp.asarray(case.arrays[k]) for k in case.differentiable))
    return {k: np.asarray(g) for k, g in zip(case.differentiable, grads, strict=True)}
