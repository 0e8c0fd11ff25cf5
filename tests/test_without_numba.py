"""A process where numba cannot be imported still gets correct results from every fast path.

A child process blocks ``import numba`` (and llvmlite) before importing anyloss, as on a
platform without numba wheels, then calls every NumPy loss kernel of the registry with
inputs large enough to pass the kernels' size thresholds, with fast paths on and off
(the written-once formula), and reports the largest relative difference per kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from anyloss import _registry

HERE = os.path.dirname(os.path.abspath(__file__))

_BLOCKER = """
import importlib.abc, sys
class _NoNumba(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ImportError(f"{name} is blocked by the test")
sys.meta_path.insert(0, _NoNumba())
"""


def _rng():
    return np.random.default_rng(7)


def _classes(n=64, c=1024):
    rng = _rng()
    return rng.standard_normal((n, c)) * 3, rng.integers(0, c, n)


def _log_softmax(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _ctc():
    rng = _rng()
    log_probs = _log_softmax(rng.standard_normal((50, 4, 20)))
    targets = rng.integers(1, 20, (4, 10))
    return (log_probs, targets, np.array([50, 45, 40, 50]), np.array([10, 8, 5, 0])), {
        "reduction": "none"}


def _pair(low=-3.0, high=3.0, shape=(256, 300)):
    rng = _rng()
    return rng.uniform(low, high, shape), rng.uniform(low, high, shape)


def _signs(shape=(256, 300)):
    return np.where(_rng().random(shape) < 0.5, -1.0, 1.0)


def _half(call):
    """``call`` with its float arrays in float16 (the route of :mod:`.backends.numpy.float16`)."""
    args, kwargs = call
    return tuple(a.astype(np.float16) if isinstance(a, np.ndarray) else a for a in args), kwargs


def _float32(value):
    return value.astype(np.float32) if isinstance(value, np.ndarray) else value


def _calls(name):
    """The calls ``(args, kwargs)`` that exercise the NumPy kernel of ``name``."""
    rng = _rng()
    x, t = _classes()
    probs = rng.uniform(0.01, 0.99, (256, 300))
    table = {
        "nll_loss": [((_log_softmax(x), t), {})],
        "cross_entropy": [((x, t), {}), ((x, t), {"weight": rng.random(1024),
                                                  "label_smoothing": 0.1,
                                                  "ignore_index": int(t[0])}),
                          ((x, t), {"reduction": "none"})],
        "ctc_loss": [_ctc()],
        "linear_cross_entropy": [((rng.standard_normal((64, 32)),
                                   rng.standard_normal((1024, 32)), t), {})],
        "multilabel_margin_loss": [((rng.standard_normal((64, 16)),
                                     np.where(rng.random((64, 16)) < 0.3, -1,
                                              rng.integers(0, 16, (64, 16)))), {})],
        "multi_margin_loss": [((x, t), {}), ((x, t), {"p": 2, "margin": 0.5})],
        "mse_loss": [(_pair(), {}), _half((_pair(), {}))],
        "l1_loss": [(_pair(), {}), _half((_pair(), {"reduction": "none"}))],
        "huber_loss": [(_pair(), {}), (_pair(), {"delta": 0.5, "reduction": "none"})],
        "smooth_l1_loss": [(_pair(), {}), (_pair(), {"beta": 0.0})],
        "binary_cross_entropy": [((probs, rng.random((256, 300))), {})],
        "binary_cross_entropy_with_logits": [
            (_pair(), {}), ((probs, rng.random((256, 300))), {"pos_weight": rng.random(300)})],
        "kl_div": [((np.log(probs), rng.random((256, 300))), {"reduction": "batchmean"}),
                   ((np.log(probs), np.log(probs[::-1].copy())), {"log_target": True})],
        "poisson_nll_loss": [((_pair()[0], rng.poisson(3.0, (256, 300)).astype(float)), {}),
                             ((probs * 5, rng.poisson(3.0, (256, 300)).astype(float)),
                              {"log_input": False, "full": True})],
        "gaussian_nll_loss": [((*_pair(), probs), {}), ((*_pair(), probs), {"full": True})],
        "soft_margin_loss": [((_pair()[0], _signs()), {})],
        "multilabel_soft_margin_loss": [((_pair()[0], (_signs() > 0).astype(float)), {})],
        "hinge_embedding_loss": [((np.abs(_pair()[0]), _signs()), {"margin": 1.5})],
        "margin_ranking_loss": [((*_pair(), _signs()), {}), _half(((*_pair(), _signs()), {}))],
        "triplet_margin_loss": [((*_pair(), _pair()[0][::-1].copy()), {"swap": True}),
                                _half(((*_pair(), _pair()[0][::-1].copy()), {}))],
        "cosine_embedding_loss": [((*_pair(shape=(256, 64)), _signs((256,))), {"margin": 0.2})],
    }
    if name.endswith("_and_grad"):
        return table[name[: -len("_and_grad")]]
    return table[name]


def _numpy_kernels() -> list[str]:
    # The registry is filled as the loss modules load; anyloss is imported by conftest.
    import anyloss  # noqa: F401

    return sorted({k.function for k in _registry.records(library="numpy",
                                                          stage=("first", "checked"))})


def _relative_difference(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    both = np.isnan(a) & np.isnan(b)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    a, b = a[~both], b[~both]
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _child() -> None:
    """Run in the child: each kernel with fast paths on and off; print a JSON report."""
    import io

    import anyloss
    from anyloss.backends.numpy import compiled
    from anyloss.conformance import cli

    info = io.StringIO()
    cli.main(["info"], out=info)
    report = {"have_numba": compiled.HAVE_NUMBA, "why": compiled.describe(),
              "numba_imported": "numba" in sys.modules, "info": info.getvalue(),
              "differences": {}}
    for name in _numpy_kernels():
        worst = 0.0
        for args, kwargs in _calls(name):
            function = getattr(anyloss, name)
            fast = function(*args, **kwargs)
            half = any(isinstance(a, np.ndarray) and a.dtype == np.float16 for a in args)
            if half:  # the formula on the float32 values (blocked, as the route runs it), rounded
                with anyloss.fast_paths("blocks"):
                    generic = np.asarray(function(*map(_float32, args), **kwargs))
                generic = generic.astype(np.float16)
                assert np.asarray(fast).dtype == np.float16, (name, np.asarray(fast).dtype)
            else:
                with anyloss.fast_paths(False):
                    generic = function(*args, **kwargs)
            fast = fast if isinstance(fast, tuple) else (fast,)
            generic = generic if isinstance(generic, tuple) else (generic,)
            for f, g in zip(fast, generic, strict=True):
                worst = max(worst, _relative_difference(f, g))
        report["differences"][name] = worst
    print(json.dumps(report))


@pytest.fixture(scope="module")
def child_report():
    code = (_BLOCKER + f"\nsys.path.insert(0, {HERE!r})\n"
            "import warnings; warnings.simplefilter('ignore')\n"
            "import test_without_numba\ntest_without_numba._child()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_child_has_no_numba(child_report):
    assert child_report["have_numba"] is False
    assert child_report["numba_imported"] is False
    assert "numba cannot be imported" in child_report["why"]


def test_info_says_what_is_off_and_why(child_report):
    """``anyloss info`` names the fallback engines that run and lists the kernels that
    decline every call without numba, instead of describing them as running."""
    info = child_report["info"]
    assert "numba: numba cannot be imported (ImportError" in info
    off = [line for line in info.splitlines() if "off without numba:" in line]
    assert off and "nll_loss" in off[0]
    assert "nll_loss (first)" not in info.split("  torch")[0]
    assert "ctc_loss (checked, no numba): log space vectorised" in info


@pytest.mark.parametrize("name", _numpy_kernels())
def test_fast_path_without_numba_matches_the_formula(child_report, name):
    assert name in child_report["differences"], f"{name} was not run in the child"
    assert child_report["differences"][name] <= 1e-10, child_report["differences"][name]


def test_every_numpy_kernel_has_calls():
    for name in _numpy_kernels():
        assert _calls(name), name
