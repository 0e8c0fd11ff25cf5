"""Gradients through anyloss, by torch autograd and by ``jax.grad``, equal torch's own."""

from __future__ import annotations

import pytest
from helpers import (
    FLOAT64,
    anyloss_jax_gradients,
    anyloss_torch_gradients,
    assert_close,
    torch_reference_gradients,
)

from anyloss.conformance import catalogue, namespaces

CASES = [c for c in catalogue.cases() if c.differentiable]


#: Each case twice: with fast paths on (torch's kernels and building blocks where anyloss
#: has them) and fully off (anyloss's written-once formula alone).
TORCH_RUNS = [pytest.param(case, fast, id=case.id + ("" if fast else "-generic"))
              for case in CASES for fast in (True, False)]


@pytest.mark.parametrize(("case", "fast"), TORCH_RUNS)
def test_torch_autograd(case, fast):
    """On the torch namespace's device (``ANYLOSS_TORCH_DEVICE``), against CPU torch."""
    expected = torch_reference_gradients(case)
    got = anyloss_torch_gradients(case, fast=fast, device=namespaces.torch_device())
    for name in case.differentiable:
        assert_close(got[name], expected[name], **FLOAT64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jax_grad(case):
    got = anyloss_jax_gradients(case)
    expected = torch_reference_gradients(case)
    for name in case.differentiable:
        assert_close(got[name], expected[name], **FLOAT64)
