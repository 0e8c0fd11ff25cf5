"""The kernels' thread setting: anyloss.threads, set_threads, ANYLOSS_NUM_THREADS, and who
honours it (numba's parallel kernels, Dask chunks)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import anyloss
from anyloss import _threads


@pytest.fixture(autouse=True)
def _no_process_setting():
    anyloss.set_threads(None)
    yield
    anyloss.set_threads(None)


def test_context_beats_process_beats_environment(monkeypatch):
    monkeypatch.setenv(_threads.ENVIRONMENT_VARIABLE, "3")
    assert anyloss.get_threads() == 3
    anyloss.set_threads(2)
    assert anyloss.get_threads() == 2
    with anyloss.threads(1):
        assert anyloss.get_threads() == 1
        with anyloss.threads(5):
            assert anyloss.get_threads() == 5
        assert anyloss.get_threads() == 1
    assert anyloss.get_threads() == 2
    anyloss.set_threads(None)
    assert anyloss.get_threads() == 3


def test_default_is_the_usable_cpus(monkeypatch):
    monkeypatch.delenv(_threads.ENVIRONMENT_VARIABLE, raising=False)
    expected = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
    assert anyloss.get_threads() == expected


@pytest.mark.parametrize("bad", [0, -1, "two", "", 1.5, True, None])
def test_bad_counts(bad):
    error = TypeError if isinstance(bad, (float, bool)) or bad is None else ValueError
    if bad == "":
        error = ValueError
    with pytest.raises(error, match="number of threads"), anyloss.threads(bad):
        pass


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(_threads.ENVIRONMENT_VARIABLE, "lots")
    with pytest.raises(ValueError, match="ANYLOSS_NUM_THREADS must be a positive integer"):
        anyloss.get_threads()


def test_the_block_is_local_to_its_thread():
    seen = []
    with anyloss.threads(1):
        worker = threading.Thread(target=lambda: seen.append(anyloss.get_threads()))
        worker.start()
        worker.join()
        assert anyloss.get_threads() == 1
    assert seen == [anyloss.get_threads()]


def test_environment_variable_in_a_new_process():
    env = dict(os.environ, ANYLOSS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", "import anyloss; print(anyloss.get_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


numba = pytest.importorskip("numba")


def _threads_used(kernel, size=64):
    ids = np.full(size, -1, dtype=np.int64)
    kernel(ids)
    return len(set(ids.tolist()))


def _record_thread_ids(ids):
    for i in numba.prange(ids.shape[0]):
        ids[i] = numba.get_thread_id()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
def test_parallel_kernels_follow_the_setting():
    from anyloss.backends.numpy.compiled.parallel import parallel_kernel

    kernel = parallel_kernel()(_record_thread_ids)
    with anyloss.threads(1):
        assert _threads_used(kernel) == 1
    with anyloss.threads(2):
        assert _threads_used(kernel) == 2


def test_dask_chunks_run_on_one_thread(monkeypatch):
    da = pytest.importorskip("dask.array")
    from anyloss.backends.numpy import cross_entropy as numpy_cross_entropy

    seen = []
    original = numpy_cross_entropy.cross_entropy_elements

    def spy(*args, **kwargs):
        seen.append(anyloss.get_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(numpy_cross_entropy, "cross_entropy_elements", spy)
    rng = np.random.default_rng(0)
    x = da.from_array(rng.standard_normal((64, 10)), chunks=(16, 10))
    t = da.from_array(rng.integers(0, 10, 64), chunks=16)
    with anyloss.threads(2):
        loss = anyloss.cross_entropy(x, t).compute(scheduler="threads")
    expected = anyloss.cross_entropy(np.asarray(x), np.asarray(t))
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    assert seen and set(seen) == {1}
