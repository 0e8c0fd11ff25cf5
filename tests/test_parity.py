"""Per-element parity of every catalogue case with torch.nn.functional, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FLOAT32, FLOAT64, assert_close, call_quietly, torch_oracle

import anyloss
from anyloss.conformance import catalogue

CASES = list(catalogue.cases())
REFERENCES = catalogue.references()


def _run(backend, case: catalogue.Case, dtype):
    arrays = {k: backend.from_numpy(a) for k, a in case.arrays_as(dtype).items()}
    result = call_quietly(getattr(anyloss, case.loss), **arrays, **case.options)
    return result


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reference_agrees_with_torch(case):
    """The conformance references are a second oracle: they must match torch first."""
    expected, _ = torch_oracle(case.loss, case.arrays, case.options)
    actual = REFERENCES[case.loss](**case.arrays, **case.options)
    assert_close(actual, expected.detach().numpy(), **FLOAT64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64_parity(backend, case):
    result = _run(backend, case, np.float64)
    assert backend.xp.__name__ == anyloss._array.namespace("test", {"r": result}).__name__
    expected, _ = torch_oracle(case.loss, case.arrays, case.options)
    out = backend.to_numpy(result)
    assert out.dtype == np.float64
    assert_close(out, expected.detach().numpy(), **FLOAT64)
    assert_close(out, REFERENCES[case.loss](**case.arrays, **case.options), **FLOAT64)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_parity(backend, case):
    result = _run(backend, case, np.float32)
    expected, _ = torch_oracle(case.loss, case.arrays_as(np.float32), case.options)
    out = backend.to_numpy(result)
    assert out.dtype == np.float32
    assert_close(out, expected.detach().numpy(), **FLOAT32)
