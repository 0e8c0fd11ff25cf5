"""Every loss compiles under ``jax.jit`` and stays lazy on Dask."""

from __future__ import annotations

import numpy as np
import pytest

import anyloss
from anyloss.conformance import catalogue, namespaces

from helpers import FLOAT64, assert_close, call_quietly

CASES = list(catalogue.cases())


def _namespace(name):
    try:
        return namespaces.get(name)
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_jax_jit(case):
    """Arrays are traced, options static; the compiled result equals the eager one."""
    jax_ns = _namespace("jax")
    import jax

    loss = getattr(anyloss, case.loss)
    arrays = {k: jax_ns.from_numpy(a) for k, a in case.arrays.items()}
    compiled = jax.jit(lambda arrays: call_quietly(loss, **arrays, **case.options))
    eager = call_quietly(loss, **arrays, **case.options)
    assert_close(np.asarray(compiled(arrays)), np.asarray(eager), **FLOAT64)


class CountingScheduler:
    """A Dask scheduler that runs graphs synchronously and counts how often it is asked."""

    def __init__(self):
        self.computes = 0

    def __call__(self, dsk, keys, **kwargs):
        import dask

        self.computes += 1
        return dask.get(dsk, keys, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dask_stays_lazy(case):
    """The loss builds a graph and computes nothing until asked."""
    dask_ns = _namespace("dask")
    import array_api_compat
    import dask

    scheduler = CountingScheduler()
    arrays = {k: dask_ns.from_numpy(a) for k, a in case.arrays.items()}
    with dask.config.set(scheduler=scheduler):
        result = call_quietly(getattr(anyloss, case.loss), **arrays, **case.options)
        assert scheduler.computes == 0
        assert array_api_compat.is_dask_array(result)
        computed = np.asarray(result.compute())
        assert scheduler.computes == 1
    expected = call_quietly(getattr(anyloss, case.loss), **case.arrays, **case.options)
    assert_close(computed, np.asarray(expected), **FLOAT64)
