"""Gradients through anyloss, by torch autograd and by ``jax.grad``, equal torch's own."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FLOAT64, assert_close, call_quietly, torch_oracle

import anyloss
from anyloss.conformance import catalogue, namespaces

CASES = [c for c in catalogue.cases() if c.differentiable]


def _cotangent(shape) -> np.ndarray:
    """A fixed, non-uniform weighting of the output, so that every element's gradient counts."""
    return np.random.default_rng(0).uniform(0.5, 1.5, shape)


def _torch_gradients(case):
    torch = pytest.importorskip("torch")
    out, tensors = torch_oracle(case.loss, case.arrays, case.options, case.differentiable)
    cot = torch.tensor(_cotangent(tuple(out.shape)))
    (out * cot).sum().backward()
    return {k: tensors[k].grad.numpy() for k in case.differentiable}


#: Each case twice: with fast paths on (torch's kernels and building blocks where anyloss
#: has them) and fully off (anyloss's written-once formula alone).
TORCH_RUNS = [pytest.param(case, fast, id=case.id + ("" if fast else "-generic"))
              for case in CASES for fast in (True, False)]


@pytest.mark.parametrize(("case", "fast"), TORCH_RUNS)
def test_torch_autograd(case, fast):
    """On the torch namespace's device (``ANYLOSS_TORCH_DEVICE``), against CPU torch."""
    torch = pytest.importorskip("torch")
    expected = _torch_gradients(case)
    device = namespaces.torch_device()
    tensors = {
        k: torch.tensor(a, device=device, requires_grad=k in case.differentiable)
        for k, a in case.arrays.items()
    }
    with anyloss.fast_paths(enabled=fast):
        out = call_quietly(getattr(anyloss, case.loss), **tensors, **case.options)
    (out * torch.tensor(_cotangent(tuple(out.shape)), device=device)).sum().backward()
    for name in case.differentiable:
        assert_close(tensors[name].grad.cpu().numpy(), expected[name], **FLOAT64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jax_grad(case):
    try:
        jnp = namespaces.get("jax").xp
    except ImportError as exc:
        pytest.skip(str(exc))
    import jax

    expected = _torch_gradients(case)
    fixed = {k: jnp.asarray(a) for k, a in case.arrays.items() if k not in case.differentiable}
    loss = getattr(anyloss, case.loss)

    def objective(*diff):
        arrays = {**fixed, **dict(zip(case.differentiable, diff, strict=True))}
        out = call_quietly(loss, **arrays, **case.options)
        return jnp.sum(out * _cotangent(out.shape))

    argnums = tuple(range(len(case.differentiable)))
    grads = jax.grad(objective, argnums=argnums)(
        *(jnp.asarray(case.arrays[k]) for k in case.differentiable)
    )
    for name, grad in zip(case.differentiable, grads, strict=True):
        assert_close(np.asarray(grad), expected[name], **FLOAT64)
