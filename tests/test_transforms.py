"""Function transforms over the catalogue: ``torch.func.grad``, ``torch.func.vmap``,
``jax.jit(jax.grad(...))`` and ``jax.vmap`` through anyloss give what eager calls give.

One case per loss and reduction (the first the catalogue lists), in float64:

* the gradients by ``torch.func.grad`` and by ``jax.jit(jax.grad(...))`` of the weighted
  sum of the output equal torch autograd's through ``torch.nn.functional``;
* ``vmap`` over a new leading axis of every array argument (two copies, the second
  scaled, integer arrays repeated) equals the two eager calls, stacked.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    FLOAT64,
    anyloss_jax_gradients,
    assert_close,
    call_quietly,
    cotangent,
    torch_reference_gradients,
)

import anyloss
from anyloss.conformance import catalogue, namespaces

torch = pytest.importorskip("torch")


def _representatives() -> list[catalogue.Case]:
    seen, chosen = set(), []
    for case in catalogue.cases():
        key = (case.loss, case.options.get("reduction", "mean"))
        if key not in seen and "float64" in case.dtypes:
            seen.add(key)
            chosen.append(case)
    return chosen


CASES = _representatives()
DIFFERENTIABLE = [c for c in CASES if c.differentiable]


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=lambda c: c.id)
def test_torch_func_grad(case):
    expected = torch_reference_gradients(case)
    fixed = {k: torch.tensor(a) for k, a in case.arrays.items() if k not in case.differentiable}
    loss = getattr(anyloss, case.loss)

    def objective(*diff):
        out = call_quietly(loss, **fixed, **dict(zip(case.differentiable, diff, strict=True)),
                           **case.options)
        return (out * torch.tensor(cotangent(tuple(out.shape)))).sum()

    argnums = tuple(range(len(case.differentiable)))
    grads = torch.func.grad(objective, argnums=argnums)(
        *(torch.tensor(case.arrays[k]) for k in case.differentiable))
    for name, grad in zip(case.differentiable, grads, strict=True):
        assert_close(grad.numpy(), expected[name], **FLOAT64)


def _jax():
    try:
        return namespaces.get("jax").xp
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("case", DIFFERENTIABLE, ids=lambda c: c.id)
def test_jax_jit_grad(case):
    got = anyloss_jax_gradients(case, jit=True)
    expected = torch_reference_gradients(case)
    for name in case.differentiable:
        assert_close(got[name], expected[name], **FLOAT64)


def _batch_of_two(case) -> tuple[dict, dict]:
    """The case's arrays, and a second set: floating arrays scaled by 0.75 (targets of the
    probability losses stay in range), integer arrays unchanged."""
    second = {}
    for k, a in case.arrays.items():
        second[k] = a * 0.75 if a.dtype.kind == "f" and k in case.differentiable else a
    return case.arrays, second


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_torch_func_vmap(case):
    first, second = _batch_of_two(case)
    loss = getattr(anyloss, case.loss)
    eager = [call_quietly(loss, **{k: torch.tensor(a) for k, a in arrays.items()},
                          **case.options).numpy() for arrays in (first, second)]
    names = list(case.arrays)
    stacked = [torch.stack([torch.tensor(first[k]), torch.tensor(second[k])]) for k in names]

    def call(*arrays):
        return call_quietly(loss, **dict(zip(names, arrays, strict=True)), **case.options)

    batched = torch.func.vmap(call)(*stacked)
    assert_close(batched.numpy(), np.stack(eager), **FLOAT64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jax_vmap(case):
    jnp = _jax()
    import jax

    first, second = _batch_of_two(case)
    loss = getattr(anyloss, case.loss)
    eager = [np.asarray(call_quietly(loss, **{k: jnp.asarray(a) for k, a in arrays.items()},
                                     **case.options)) for arrays in (first, second)]
    names = list(case.arrays)
    stacked = [jnp.stack([jnp.asarray(first[k]), jnp.asarray(second[k])]) for k in names]

    def call(*arrays):
        return call_quietly(loss, **dict(zip(names, arrays, strict=True)), **case.options)

    assert_close(np.asarray(jax.vmap(call)(*stacked)), np.stack(eager), **FLOAT64)
