"""Every loss compiles under ``jax.jit`` and stays lazy on Dask."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function, patch_lazy_xp_functions
from helpers import FLOAT64, CountingScheduler, assert_close, call_quietly

import anyloss
from anyloss.conformance import catalogue, namespaces

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


#: Every loss of the catalogue as a global of this module, tagged for array-api-extra's
#: lazy-backend testing: under the fixture below, a call on Dask arrays raises if it
#: computes anything.
for _loss in sorted({case.loss for case in CASES}):
    globals()[_loss] = getattr(anyloss, _loss)
    lazy_xp_function(globals()[_loss])


@pytest.fixture
def dask_forbids_compute(request):
    """The tagged losses of this module, patched to raise on any Dask compute."""
    dask_ns = _namespace("dask")
    with patch_lazy_xp_functions(request, xp=dask_ns.xp):
        yield dask_ns


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dask_stays_lazy(case, dask_forbids_compute):
    """The loss builds a graph and computes nothing until asked; then it computes once."""
    import array_api_compat
    import dask

    arrays = {k: dask_forbids_compute.from_numpy(a) for k, a in case.arrays.items()}
    result = call_quietly(globals()[case.loss], **arrays, **case.options)
    assert array_api_compat.is_dask_array(result)
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        computed = np.asarray(result.compute())
    assert scheduler.computes == 1
    expected = call_quietly(getattr(anyloss, case.loss), **case.arrays, **case.options)
    assert_close(computed, np.asarray(expected), **FLOAT64)
