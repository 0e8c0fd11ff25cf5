"""The kernel registry: its records, the dispatcher that reads them, and the switch's levels."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import anyloss
from anyloss import _ops, _registry
from anyloss._registry import Kernel

BLOCK_NAMES = {k.function for k in _registry.records(stage="block")}


def _library_installed(library: str) -> bool:
    module = {"numpy": "numpy", "torch": "torch", "jax": "jax", "dask": "dask.array"}[library]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("record", _registry.records(), ids=lambda k: f"{k.library}-{k.stage}-"
                         f"{k.function}")
def test_every_record_names_a_real_function_and_a_loadable_kernel(record):
    if record.stage in ("first", "checked"):
        assert callable(getattr(anyloss, record.function)), record
    elif record.stage == "block":
        assert record.function in BLOCK_NAMES
    if not _library_installed(record.library):
        pytest.skip(f"{record.library} is not installed")
    assert callable(record.load()), record


def test_one_record_per_function_library_and_stage():
    keys = [(k.function, k.library, k.stage) for k in _registry.records()]
    assert len(keys) == len(set(keys))
    first = _registry.records()[0]
    clash = Kernel(first.function, first.library, first.stage, "numpy.blocks:mean", "other")
    with pytest.raises(ValueError, match="declared twice"):
        _registry.declare(clash)


def test_records_are_checked_when_declared():
    with pytest.raises(ValueError, match="unknown stage"):
        Kernel("mean", "numpy", "sometimes", "numpy.blocks:mean", "np.mean")
    with pytest.raises(ValueError, match="module:attribute"):
        Kernel("mean", "numpy", "block", "numpy.blocks.mean", "np.mean")
    with pytest.raises(ValueError, match="declared on"):
        _registry.kernels(Kernel("mse_loss", "numpy", "first", "numpy.blocks:mean", "x"))(
            anyloss.l1_loss)


@pytest.mark.parametrize("level", [True, False, "all", "blocks", "none"])
def test_levels(level):
    expected = {True: "all", False: "none"}.get(level, level)
    with anyloss.fast_paths(level):
        assert anyloss.fast_path_level() == expected
        assert anyloss.fast_paths_enabled() == (expected != "none")
    assert anyloss.fast_path_level() == "all"


def test_a_bad_level_is_refused():
    with pytest.raises(ValueError, match="fast paths"), anyloss.fast_paths("sometimes"):
        pass
    with pytest.raises(ValueError, match="fast paths"):
        anyloss.set_fast_paths("sometimes")


@pytest.fixture
def spies(monkeypatch):
    """Counts the calls of NumPy's cross-entropy kernels (both stages) and of its log_softmax
    block."""
    calls = {"kernel": 0, "block": 0}
    for (function, stage), key in {("cross_entropy", "first"): "kernel",
                                   ("cross_entropy", "checked"): "kernel",
                                   ("log_softmax", "block"): "block"}.items():
        (record,) = _registry.records(function, "numpy", stage)
        module_name, attribute = record.target.split(":")
        module = importlib.import_module(f"anyloss.backends.{module_name}")
        original = getattr(module, attribute)

        def counting(*args, _key=key, _original=original, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, attribute, counting)
    _registry._clear_caches()
    yield calls
    _registry._clear_caches()


@pytest.mark.parametrize(("level", "kernel", "block"),
                         [("all", 1, 0), ("blocks", 0, 1), ("none", 0, 0)])
def test_each_level_runs_what_it_says(spies, level, kernel, block):
    g = np.random.default_rng(0)
    x = g.standard_normal((1 << 12, 16))  # large enough for the NumPy pass
    target = g.integers(0, 16, 1 << 12)
    with anyloss.fast_paths(level):
        loss = anyloss.cross_entropy(x, target)
    assert (spies["kernel"], spies["block"]) == (kernel, block)
    with anyloss.fast_paths(False):
        generic = anyloss.cross_entropy(x, target)
    np.testing.assert_allclose(loss, generic, rtol=1e-12)


def test_the_portable_block_runs_when_the_kernel_declines(monkeypatch):
    """A block kernel answering NotImplemented leaves the call to the portable formula."""
    (record,) = _registry.records("softplus", "numpy", "block")
    module = importlib.import_module("anyloss.backends." + record.target.split(":")[0])
    monkeypatch.setattr(module, "softplus", lambda x: NotImplemented)
    _registry._clear_caches()
    try:
        x = np.asarray([-1000.0, 0.0, 1000.0])
        np.testing.assert_allclose(_ops.softplus(np, x), [0.0, np.log(2.0), 1000.0])
    finally:
        _registry._clear_caches()


def test_info_lists_the_registry():
    import io

    from anyloss.conformance import cli

    out = io.StringIO()
    assert cli.main(["info"], out) == 0
    for k in _registry.records(library="numpy", stage=("first", "checked")):
        assert f"{k.function} ({k.stage}): {k.engine}" in out.getvalue()
    out = io.StringIO()
    assert cli.main(["info", "--markdown"], out) == 0
    assert out.getvalue() == _registry.markdown_tables()
