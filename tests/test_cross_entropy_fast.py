"""Cross-entropy fast paths and ``cross_entropy_and_grad``: equal to the generic path and to torch.

Every backend with a fast path (NumPy, torch, JAX, Dask) runs the same cases
with fast paths on and off, against ``torch.nn.functional.cross_entropy`` and
its autograd gradient; the NumPy blocked pass is also run with tiny blocks and
its thread pool forced on, and its memory is measured with tracemalloc.
"""

from __future__ import annotations

import threading
import tracemalloc
import zlib

import numpy as np
import pytest
from helpers import FLOAT32, FLOAT64, assert_close

import anyloss
from anyloss import _registry, classification
from anyloss.backends.numpy import compiled
from anyloss.backends.numpy import cross_entropy as numpy_backend
from anyloss.conformance import namespaces

torch = pytest.importorskip("torch")
F = torch.nn.functional

BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "dask"]
#: The libraries with a cross-entropy kernel, as the registry declares them.
FAST_BACKENDS = list(_registry.libraries("cross_entropy"))
REDUCTIONS = ["none", "mean", "sum"]


def _problem(name, dtype=np.float64):
    """``(input, target, weight, options)`` of a named case (class-index targets)."""
    g = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "logits-1e4":
        x = np.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4], [5e3, -1e4, 1e4]])
        return x.astype(dtype), np.asarray([0, 0, 1, 2]), g.uniform(0.5, 2, 3), {
            "label_smoothing": 0.1}
    shapes = {
        "plain": ((6, 5), (6,)),
        "unbatched": ((7,), ()),
        "one-class": ((4, 1), (4,)),
        "k-dim": ((3, 4, 2, 5), (3, 2, 5)),
        "k-dim-1": ((2, 6, 7), (2, 7)),
        "all-ignored": ((3, 4), (3,)),
        "wide": ((5, 300), (5,)),
        "long": ((3, 4500), (3,)),  # rows over two of the compiled kernel's chunks
        "k-dim-wide": ((2, 5, 3, 50), (2, 3, 50)),
    }
    input_shape, target_shape = shapes[name.split("/")[0]]
    n_classes = input_shape[0 if len(input_shape) == 1 else 1]
    x = (3 * g.standard_normal(input_shape)).astype(dtype)
    target = g.integers(0, n_classes, target_shape)
    weight = g.uniform(0.2, 2.0, n_classes)
    options = {}
    if name.endswith("/weight"):
        options["weight"] = True
    if "/smooth" in name:
        options["label_smoothing"] = 0.25
    if "/ignore" in name and target.ndim:
        target.flat[::3] = -100
    if name == "all-ignored":
        target[:] = 7
        options["ignore_index"] = 7
        options["label_smoothing"] = 0.1
    return x, target, weight, options


CASES = [
    "plain", "plain/weight", "plain/smooth", "plain/smooth/ignore/weight", "plain/ignore",
    "unbatched", "unbatched/smooth/weight", "one-class", "one-class/smooth",
    "k-dim", "k-dim/smooth/ignore/weight", "k-dim-1/ignore/weight", "all-ignored",
    "logits-1e4", "wide/smooth/weight",
]


@pytest.fixture(autouse=True)
def numpy_pass_at_every_size(monkeypatch):
    """The NumPy blocked pass declines small inputs; these cases are small, so that
    torch's autograd stays quick as the oracle: let the pass take them all."""
    monkeypatch.setattr(numpy_backend, "_CE_MIN_ELEMENTS", 0)


def test_numpy_pass_declines_small_inputs(monkeypatch):
    monkeypatch.setattr(numpy_backend, "_CE_MIN_ELEMENTS", 1 << 15)
    x, target = np.zeros((64, 10)), np.zeros(64, dtype=np.int64)
    options = {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0}
    assert numpy_backend.cross_entropy(x, target, None, **options) is NotImplemented
    assert numpy_backend.cross_entropy_and_grad(x, target, None, **options) is NotImplemented
    big = np.zeros((64, 512))
    assert numpy_backend.cross_entropy(big, target, None, **options) is not NotImplemented


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dask_chunks_below_the_numpy_threshold(monkeypatch, reduction):
    """Dask's chunks take the blocked pass whatever their size (no decline inside a graph)."""
    monkeypatch.setattr(numpy_backend, "_CE_MIN_ELEMENTS", 1 << 15)
    ns = _ns("dask")
    x, target, weight, options = _problem("plain/smooth/ignore/weight")
    loss, grad = _call(anyloss.cross_entropy_and_grad, ns, x, target, weight, options, reduction)
    expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
    assert_close(_to_numpy(ns, loss), expected_loss, **FLOAT64)
    assert_close(_to_numpy(ns, grad), expected_grad, rtol=1e-6, atol=1e-9)


def _ns(name):
    try:
        return namespaces.get(name)
    except ImportError as exc:
        pytest.skip(str(exc))


def _call(func, ns, x, target, weight, options, reduction):
    options = dict(options)
    w = ns.from_numpy(weight) if options.pop("weight", False) else None
    return func(ns.from_numpy(x), ns.from_numpy(target), w, reduction=reduction, **options)


def _torch_expected(x, target, weight, options, reduction):
    options = dict(options)
    w = torch.tensor(weight).to(torch.float64) if options.pop("weight", False) else None
    leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(leaf, torch.tensor(target), w, reduction=reduction, **options)
    loss.sum().backward()
    return loss.detach().numpy(), leaf.grad.numpy()


def _to_numpy(ns, a):
    return np.asarray(ns.to_numpy(a))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", FAST_BACKENDS)
def test_fast_path_equals_generic_and_torch(name, case, reduction):
    ns = _ns(name)
    x, target, weight, options = _problem(case)
    fast = _to_numpy(ns, _call(anyloss.cross_entropy, ns, x, target, weight, options, reduction))
    with anyloss.fast_paths(enabled=False):
        generic = _to_numpy(ns, _call(anyloss.cross_entropy, ns, x, target, weight, options,
                                      reduction))
    expected, _ = _torch_expected(x, target, weight, options, reduction)
    assert fast.dtype == np.float64
    assert_close(fast, generic, **FLOAT64)
    assert_close(fast, expected, **FLOAT64)
    if case == "all-ignored":
        assert np.isnan(fast) if reduction == "mean" else np.all(fast == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("name", BACKENDS)
def test_loss_and_grad_equals_torch_autograd(name, fast, case, reduction):
    if fast and name not in FAST_BACKENDS:
        pytest.skip("no fast path: the same call as fast=False")
    ns = _ns(name)
    x, target, weight, options = _problem(case)
    with anyloss.fast_paths(enabled=fast):
        loss, grad = _call(anyloss.cross_entropy_and_grad, ns, x, target, weight, options,
                           reduction)
    expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
    assert_close(_to_numpy(ns, loss), expected_loss, **FLOAT64)
    grad = _to_numpy(ns, grad)
    assert grad.shape == x.shape and grad.dtype == np.float64
    assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", ["plain/smooth/ignore/weight", "k-dim/smooth/ignore/weight",
                                  "wide/smooth/weight", "unbatched"])
@pytest.mark.parametrize("name", BACKENDS)
def test_float32_loss_and_grad(name, case):
    ns = _ns(name)
    x, target, weight, options = _problem(case, np.float32)
    weight = weight.astype(np.float32)
    loss, grad = _call(anyloss.cross_entropy_and_grad, ns, x, target, weight, options, "mean")
    loss_only = _call(anyloss.cross_entropy, ns, x, target, weight, options, "mean")
    expected_loss, expected_grad = _torch_expected(x, target, weight, options, "mean")
    assert _to_numpy(ns, loss).dtype == np.float32 and _to_numpy(ns, grad).dtype == np.float32
    assert_close(_to_numpy(ns, loss), expected_loss, **FLOAT32)
    assert_close(_to_numpy(ns, loss_only), expected_loss, **FLOAT32)
    assert_close(_to_numpy(ns, grad), expected_grad, rtol=1e-4, atol=1e-6)


def test_zero_total_weight_gradient_is_torchs():
    """Targets of weight 0 under 'mean': nan loss, nan gradient on them, 0 on ignored ones."""
    x = np.random.default_rng(1).standard_normal((3, 4))
    target, weight = np.asarray([0, 0, -100]), np.asarray([0.0, 1.0, 1.0, 1.0])
    expected_loss, expected_grad = _torch_expected(x, target, weight, {"weight": True}, "mean")
    for fast in (True, False):
        with anyloss.fast_paths(enabled=fast):
            loss, grad = anyloss.cross_entropy_and_grad(x, target, weight)
        assert np.isnan(loss) and np.isnan(expected_loss)
        assert_close(grad, expected_grad, **FLOAT64)


# --- the NumPy blocked pass --------------------------------------------------------------


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of a few dozen elements and the thread pool on for every size."""
    monkeypatch.setattr(numpy_backend, "_CE_BLOCK_ELEMENTS", 24)
    monkeypatch.setattr(numpy_backend, "_CE_PARALLEL_ELEMENTS", 0)


@pytest.mark.parametrize("case", ["plain/smooth/ignore/weight", "k-dim/smooth/ignore/weight",
                                  "k-dim-1/ignore/weight", "wide/smooth/weight", "unbatched"])
def test_numpy_many_blocks_on_threads(tiny_blocks, case):
    x, target, weight, options = _problem(case)
    for reduction in REDUCTIONS:
        expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
        w = weight if options.get("weight") else None
        kwargs = {k: v for k, v in options.items() if k != "weight"}
        loss = anyloss.cross_entropy(x, target, w, reduction=reduction, **kwargs)
        loss2, grad = anyloss.cross_entropy_and_grad(x, target, w, reduction=reduction, **kwargs)
        assert_close(loss, expected_loss, **FLOAT64)
        assert_close(loss2, expected_loss, **FLOAT64)
        assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


def test_numpy_pool_runs_blocks_on_worker_threads(tiny_blocks, monkeypatch):
    seen = set()
    original = numpy_backend._CrossEntropyPass._do

    def spy(self, do, blocks):
        seen.add(threading.current_thread().name)
        return original(self, do, blocks)

    monkeypatch.setattr(numpy_backend._CrossEntropyPass, "_do", spy)
    monkeypatch.setattr(numpy_backend, "_ce_workers", lambda: 2)
    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)  # the NumPy engine's pool
    x, target, _, _ = _problem("wide")
    anyloss.cross_entropy(x, target)
    assert seen and all(name.startswith("anyloss-ce") for name in seen)


@pytest.fixture(params=["numba", "numpy"])
def engine(request, monkeypatch):
    """The compiled (numba) and the pure-NumPy engines of the float32 row pass."""
    if request.param == "numba" and not compiled.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "HAVE_NUMBA", request.param == "numba")
    return request.param


@pytest.mark.parametrize("blocks", ["default", "tiny"])
@pytest.mark.parametrize("case", ["plain/smooth/ignore/weight", "plain/smooth", "plain",
                                  "wide/smooth/weight", "logits-1e4", "one-class/smooth",
                                  "k-dim/smooth/ignore/weight"])
def test_numpy_engines_float32(engine, case, blocks, monkeypatch):
    if blocks == "tiny":
        monkeypatch.setattr(numpy_backend, "_CE_BLOCK_ELEMENTS", 24)
        monkeypatch.setattr(numpy_backend, "_CE_PARALLEL_ELEMENTS", 0)
    x, target, weight, options = _problem(case, np.float32)
    weight = weight.astype(np.float32)
    w = weight if options.get("weight") else None
    kwargs = {k: v for k, v in options.items() if k != "weight"}
    for reduction in REDUCTIONS:
        expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
        loss = anyloss.cross_entropy(x, target, w, reduction=reduction, **kwargs)
        loss2, grad = anyloss.cross_entropy_and_grad(x, target, w, reduction=reduction, **kwargs)
        assert loss.dtype == grad.dtype == np.float32
        assert_close(loss, expected_loss, **FLOAT32)
        assert_close(loss2, expected_loss, **FLOAT32)
        assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_numpy_engines_non_finite_logits(engine):
    """Rows holding inf or nan give torch's losses (the compiled loop's polynomial exp
    does not see them: such rows go to the NumPy arithmetic), which differ from the
    generic formula's where a +inf logit is not the target's (torch: nan)."""
    x = np.asarray([[np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [-np.inf, 0.0, 1.0],
                    [0.5, 0.0, 1.0], [np.inf, 0.0, 1.0]], dtype=np.float32)
    target = np.asarray([1, 1, 2, 0, 0])
    for smoothing in (0.0, 0.1):
        fast = anyloss.cross_entropy(x, target, reduction="none", label_smoothing=smoothing)
        expected = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(target),
                                   reduction="none", label_smoothing=smoothing)
        assert_close(fast, expected.numpy(), **FLOAT32)


def test_numpy_float16_computes_in_float32():
    g = np.random.default_rng(2)
    x = (4 * g.standard_normal((8, 50))).astype(np.float16)
    target = g.integers(0, 50, 8)
    loss, grad = anyloss.cross_entropy_and_grad(x, target, label_smoothing=0.1)
    assert loss.dtype == np.float16 and grad.dtype == np.float16
    expected_loss, expected_grad = _torch_expected(x.astype(np.float32), target, None,
                                                   {"label_smoothing": 0.1}, "mean")
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-3)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-2, atol=1e-4)
    np.testing.assert_allclose(anyloss.cross_entropy(x, target, label_smoothing=0.1),
                               expected_loss, rtol=1e-3)


def test_numpy_strided_input_and_narrow_targets():
    """A transposed (non-contiguous) input, int32/uint8 targets; user arrays stay unchanged."""
    g = np.random.default_rng(3)
    x = g.standard_normal((40, 6)).T  # (6, 40), Fortran-ordered
    target = g.integers(0, 40, 6).astype(np.int32)
    x_before, target_before = x.copy(), target.copy()
    expected_loss, expected_grad = _torch_expected(x, target.astype(np.int64), None, {}, "sum")
    loss, grad = anyloss.cross_entropy_and_grad(x, target, reduction="sum")
    assert_close(loss, expected_loss, **FLOAT64)
    assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(target, target_before)
    small = g.integers(0, 6, 5).astype(np.uint8)
    small[1] = 255
    y = g.standard_normal((5, 6))
    got = anyloss.cross_entropy(y, small, ignore_index=255, reduction="none")
    expected, _ = _torch_expected(y, small.astype(np.int64), None, {"ignore_index": 255}, "none")
    assert_close(got, expected, **FLOAT64)


def test_fast_path_keeps_torch_errors():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError, match=r"Target 3 is out of bounds\."):
        anyloss.cross_entropy(x, np.asarray([0, 3]))
    with pytest.raises(IndexError, match=r"Target -1 is out of bounds\."):
        anyloss.cross_entropy_and_grad(x, np.asarray([-1, 0]))
    with pytest.raises(ValueError, match="label_smoothing must be between"):
        anyloss.cross_entropy_and_grad(x, np.asarray([0, 0]), label_smoothing=1.5)


def test_probability_targets_and_grad():
    """Probability targets: the generic path (NumPy) and torch's own, with their gradient."""
    g = np.random.default_rng(4)
    x = g.standard_normal((4, 5, 3))
    probs = np.moveaxis(g.dirichlet(np.ones(5), (4, 3)), -1, 1)
    weight = g.uniform(0.5, 2, 5)
    for name in ("numpy", "torch", "jax", "array_api_strict"):
        ns = _ns(name)
        for reduction in REDUCTIONS:
            leaf = torch.tensor(x, requires_grad=True)
            expected = F.cross_entropy(leaf, torch.tensor(probs), torch.tensor(weight),
                                       reduction=reduction, label_smoothing=0.2)
            expected.sum().backward()
            loss, grad = anyloss.cross_entropy_and_grad(
                ns.from_numpy(x), ns.from_numpy(probs), ns.from_numpy(weight),
                reduction=reduction, label_smoothing=0.2)
            assert_close(_to_numpy(ns, loss), expected.detach().numpy(), **FLOAT64)
            assert_close(_to_numpy(ns, grad), leaf.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_memory_stays_within_five_percent_of_the_input():
    """tracemalloc peak beyond the input (and the gradient output) at 2048 x 8192 float32."""
    g = np.random.default_rng(5)
    x = g.standard_normal((2048, 8192), dtype=np.float32)
    target = g.integers(0, 8192, 2048)
    weight = g.uniform(0.5, 2, 8192).astype(np.float32)
    anyloss.cross_entropy(x, target)  # warm up: the pool and its scratch buffers
    anyloss.cross_entropy_and_grad(x, target)
    budget = 0.05 * x.nbytes
    for kwargs in ({}, {"weight": weight, "label_smoothing": 0.1, "reduction": "none"}):
        tracemalloc.start()
        try:
            anyloss.cross_entropy(x, target, **kwargs)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            _, grad = anyloss.cross_entropy_and_grad(x, target, **kwargs)
            _, peak_grad = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak <= budget, (peak, budget)
        assert peak_grad - grad.nbytes <= budget, (peak_grad - grad.nbytes, budget)


# --- the compiled engine (numba) against the NumPy engine and torch --------------------

needs_numba = pytest.mark.skipif(not compiled.HAVE_NUMBA, reason="numba is not installed")


def _probability_problem(shape, dtype, kind="dirichlet"):
    """``(logits, target)`` of a probability-target case, ``shape`` ``(C,)``, ``(N, C)`` or
    ``(N, C, d1, ...)``: each target summing to 1 over the classes, or of any positive
    sum, or with negative entries (torch does not check probabilities)."""
    g = np.random.default_rng(zlib.crc32(f"{shape}{kind}".encode()))
    x = (3 * g.standard_normal(shape)).astype(dtype)
    if kind == "dirichlet":
        classes = 0 if len(shape) == 1 else 1
        others = shape[:classes] + shape[classes + 1:]
        target = np.ascontiguousarray(
            np.moveaxis(g.dirichlet(np.ones(shape[classes]), others), -1, classes))
    elif kind == "unnormalised":
        target = g.uniform(0, 3, shape)
    else:  # "signed"
        target = g.uniform(-1, 1, shape)
    return x, target.astype(dtype)


def _refuse_probability_formula(monkeypatch):
    """Fail if the written-once probability formula runs (the compiled rows must answer)."""
    def refuse(*args):
        raise AssertionError("the written-once formula ran")

    monkeypatch.setattr(classification, "_cross_entropy_probabilities", refuse)
    monkeypatch.setattr(classification, "_probabilities_grad", refuse)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", ["", "weight", "smooth", "smooth/weight"])
@pytest.mark.parametrize("case", [((300,), "dirichlet"), ((6, 5), "dirichlet"),
                                  ((40, 300), "dirichlet"), ((3, 4500), "dirichlet"),
                                  ((20, 700), "unnormalised"), ((20, 70), "signed"),
                                  ((4, 30, 6), "dirichlet"), ((2, 300, 5, 100), "dirichlet"),
                                  ((3, 7, 40), "unnormalised"), ((3, 7, 40), "signed"),
                                  ((5, 300, 1, 1), "dirichlet")],
                         ids=str)
def test_probability_rows_equal_torch(case, options, dtype, monkeypatch):
    """Probability targets by the compiled rows and columns (the formula refuses to run),
    loss and gradient, every reduction, against torch in float64 element by element: rows
    under and over the lanes (256) and over two chunks (2048 classes), K-dimensional input
    in one block of positions per sample and in several (300 classes: 218 positions a
    block), ``(N, C, 1, 1)`` by the rows, targets of any sum and of signed entries, class
    weights and label smoothing."""
    shape, kind = case
    x, target = _probability_problem(shape, dtype, kind)
    g = np.random.default_rng(7)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    w = g.uniform(0.2, 2.0, n_classes).astype(dtype) if "weight" in options else None
    kwargs = {"label_smoothing": 0.2} if "smooth" in options else {}
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        with monkeypatch.context() as m:
            _refuse_probability_formula(m)
            loss, loss2, grad = _both(x, target, w, reduction, kwargs)
        leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        expected = F.cross_entropy(leaf, torch.tensor(target, dtype=torch.float64),
                                   None if w is None else torch.tensor(w, dtype=torch.float64),
                                   reduction=reduction, **kwargs)
        expected.sum().backward()
        if kind == "signed" and dtype == np.float32:
            # Terms of both signs cancel: float32's rounding of terms of the size of the
            # largest loss.
            tol = {**tol, "atol": 1e-6 * float(np.abs(expected.detach().numpy()).max())}
        for got in (loss, loss2):
            assert got.dtype == dtype and got.shape == expected.shape
            assert_close(got, expected.detach().numpy(), **tol)
        assert grad.dtype == dtype and grad.shape == x.shape
        assert_close(grad, leaf.grad.numpy(), **(tol if dtype == np.float64 else
                                                 {"rtol": 1e-4, "atol": 1e-6}))


@needs_numba
@pytest.mark.parametrize("shape", [(6, 5), (300,), (2, 5, 3)], ids=str)
def test_small_probability_calls_take_the_first_stage(shape, monkeypatch):
    """Below the checked kernel's 2^15 elements, a plain call of class probabilities is
    answered by the first-stage kernels (the formula refuses to run), loss and gradient
    equal to torch for every reduction; a non-negative ``ignore_index`` still raises torch's
    error (the first stage declines it), and a weight of the wrong size too."""
    monkeypatch.setattr(numpy_backend, "_CE_MIN_ELEMENTS", 1 << 15)
    x, target = _probability_problem(shape, np.float64)
    for reduction in REDUCTIONS:
        with monkeypatch.context() as m:
            _refuse_probability_formula(m)
            loss, loss2, grad = _both(x, target, None, reduction, {"label_smoothing": 0.1})
        leaf = torch.tensor(x, requires_grad=True)
        expected = F.cross_entropy(leaf, torch.tensor(target), reduction=reduction,
                                   label_smoothing=0.1)
        expected.sum().backward()
        for got in (loss, loss2):
            assert_close(got, expected.detach().numpy(), **FLOAT64)
        assert_close(grad, leaf.grad.numpy(), **FLOAT64)
    with pytest.raises(ValueError, match="ignore_index is not supported for floating point"):
        anyloss.cross_entropy(x, target, ignore_index=3)
    with pytest.raises(ValueError, match="weight tensor should be defined either for all"):
        anyloss.cross_entropy(x, target, np.ones(shape[0 if len(shape) == 1 else 1] + 1))


@needs_numba
@pytest.mark.parametrize("options", ["", "smooth/weight"])
@pytest.mark.parametrize("shape", [(40, 300), (4, 30, 6)], ids=str)
def test_probability_float16_is_the_float32_result_rounded(shape, options, monkeypatch):
    """float16 logits, probabilities (and weight) give the compiled float32 result on their
    values, loss and gradient each rounded once to float16, bit for bit, for every reduction
    (the formula, in NumPy's float16 arithmetic, refuses to run); and that is torch's
    float64 result within float16's rounding."""
    x32, target32 = _probability_problem(shape, np.float32)
    x32, target32 = (a.astype(np.float16).astype(np.float32) for a in (x32, target32))
    w32 = None
    if "weight" in options:
        w32 = np.random.default_rng(7).uniform(0.2, 2.0, shape[1]).astype(np.float16)
        w32 = w32.astype(np.float32)
    kwargs = {"label_smoothing": 0.2} if "smooth" in options else {}

    def half(a):
        return None if a is None else a.astype(np.float16)

    for reduction in REDUCTIONS:
        loss32, loss32b, grad32 = _both(x32, target32, w32, reduction, kwargs)
        with monkeypatch.context() as m:
            _refuse_probability_formula(m)
            loss, loss2, grad = _both(half(x32), half(target32), half(w32), reduction, kwargs)
        for got in (loss, loss2):
            assert got.dtype == np.float16
        np.testing.assert_array_equal(loss, np.asarray(loss32).astype(np.float16))
        np.testing.assert_array_equal(loss2, np.asarray(loss32b).astype(np.float16))
        assert grad.dtype == np.float16
        np.testing.assert_array_equal(grad, grad32.astype(np.float16))
        expected = F.cross_entropy(
            torch.tensor(x32, dtype=torch.float64), torch.tensor(target32, dtype=torch.float64),
            None if w32 is None else torch.tensor(w32, dtype=torch.float64),
            reduction=reduction, **kwargs)
        assert_close(loss.astype(np.float64), expected.numpy(), rtol=1e-3, atol=1e-4)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probability_rows_decline_what_they_do_not_take(dtype, monkeypatch):
    """Non-finite logits or targets (of rows, and of K-dimensional positions), a transposed
    target (K-dimensional, and 2-d): the compiled rows and columns decline and the
    written-once formula answers, as torch has it."""
    x, target = _probability_problem((8, 300), dtype)
    cases = []
    for where, value in (("x", np.nan), ("x", np.inf), ("x", -np.inf), ("target", np.inf),
                         ("target", np.nan)):
        xs, ts = x.copy(), target.copy()
        (xs if where == "x" else ts)[2, 5] = value
        if where == "x" and value == -np.inf:
            xs[3, :] = -np.inf
        cases.append((xs, ts))
    k_dim = _probability_problem((4, 30, 6), dtype)
    for where, value in (("x", np.nan), ("x", np.inf), ("target", -np.inf)):
        xs, ts = k_dim[0].copy(), k_dim[1].copy()
        (xs if where == "x" else ts)[1, 7, 3] = value
        cases.append((xs, ts))
    cases.append((k_dim[0], np.ascontiguousarray(
        k_dim[1].transpose(0, 2, 1) / k_dim[1].sum(axis=1)[:, :, None]).transpose(0, 2, 1)))
    cases.append((x, np.asfortranarray(target)))
    calls = []
    formula = classification._cross_entropy_probabilities
    monkeypatch.setattr(classification, "_cross_entropy_probabilities",
                        lambda *args: calls.append(1) or formula(*args))
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for xs, ts in cases:
        before = len(calls)
        got = anyloss.cross_entropy(xs, ts, reduction="none")
        assert len(calls) == before + 1  # the formula answered
        expected = F.cross_entropy(torch.tensor(xs, dtype=torch.float64),
                                   torch.tensor(ts, dtype=torch.float64), reduction="none")
        assert_close(got, expected.numpy(), **tol)


def _numpy_engine(monkeypatch, on: bool):
    """Switch the compiled engines on (numba) or off (the NumPy fallback)."""
    monkeypatch.setattr(compiled, "HAVE_NUMBA", on)
    _registry._clear_caches()


def _both(x, target, w, reduction, kwargs):
    loss = anyloss.cross_entropy(x, target, w, reduction=reduction, **kwargs)
    loss2, grad = anyloss.cross_entropy_and_grad(x, target, w, reduction=reduction, **kwargs)
    return loss, loss2, grad


def _refuse_numpy_rows(monkeypatch):
    """Fail if the NumPy engine's row or column code runs (the compiled engine must do all)."""
    def refuse(*args):
        raise AssertionError("the NumPy engine ran")

    monkeypatch.setattr(numpy_backend._CrossEntropyPass, "_rows", refuse)
    monkeypatch.setattr(numpy_backend._CrossEntropyPass, "_columns", refuse)


@pytest.fixture
def no_numpy_rows(monkeypatch):
    """:func:`_refuse_numpy_rows` for a whole test."""
    _refuse_numpy_rows(monkeypatch)


#: Plain calls of every size the first-stage NumPy kernel takes: ``(rows, classes)``.
PLAIN_SHAPES = [(1, 1), (1, 7), (64, 10), (300, 7), (5, 300), (256, 257), (3, 4500)]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", ["", "weight", "smooth", "smooth/weight/ignore",
                                     "ignore=3"])
@pytest.mark.parametrize("shape", PLAIN_SHAPES)
def test_plain_kernel_takes_every_size_and_equals_torch(shape, options, dtype, monkeypatch):
    """The first-stage kernels answer plain (N, C) calls of any size (no threshold), equal
    to torch and its autograd gradient in float64 and float32, for every reduction."""
    g = np.random.default_rng(zlib.crc32(f"{shape}{options}".encode()))
    n, c = shape
    x = (3 * g.standard_normal(shape)).astype(dtype)
    target = g.integers(0, c, n)
    kwargs = {"label_smoothing": 0.2 if "smooth" in options else 0.0}
    if "ignore=3" in options:
        kwargs["ignore_index"] = 3  # a class index that is ignored
        target[::2] = 3
    elif "ignore" in options:
        target[::3] = -100
    w = g.uniform(0.2, 2.0, c).astype(dtype) if "weight" in options else None
    def refuse(*args):
        raise AssertionError("the checked path's pass ran")

    # The checked kernel takes every size here (the autouse fixture): it builds this pass.
    monkeypatch.setattr(numpy_backend._CrossEntropyPass, "__init__", refuse)
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        got = anyloss.cross_entropy(x, target, w, reduction=reduction, **kwargs)
        expected = F.cross_entropy(torch.from_numpy(x).double(), torch.from_numpy(target),
                                   None if w is None else torch.from_numpy(w).double(),
                                   reduction=reduction, **kwargs).numpy()
        assert got.dtype == dtype and got.shape == expected.shape
        assert_close(got, expected, **tol)
        loss, grad = anyloss.cross_entropy_and_grad(x, target, w, reduction=reduction, **kwargs)
        leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        F.cross_entropy(leaf, torch.from_numpy(target),
                        None if w is None else torch.from_numpy(w).double(),
                        reduction=reduction, **kwargs).sum().backward()
        assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
        assert_close(loss, expected, **tol)
        assert_close(grad, leaf.grad.numpy(), **(tol if dtype == np.float64 else
                                                 {"rtol": 1e-4, "atol": 1e-6}))


@needs_numba
def test_plain_kernel_declines_all_but_the_plain_call():
    """Each departure from the plain call is declined (``NotImplemented``) by both kernels,
    for the checked path to answer; bad targets and non-finite rows reach the user as torch
    has them."""
    g = np.random.default_rng(3)
    x = g.standard_normal((8, 5))
    t = g.integers(0, 5, 8)
    options = {"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0}
    for plain in (numpy_backend.cross_entropy_plain, numpy_backend.cross_entropy_and_grad_plain):
        _check_plain_declines(plain, x, t, options)
    for bad in (np.nan, np.inf, -np.inf):
        row = x.copy()
        row[2, :] = -np.inf if bad == -np.inf else row[2, :]
        row[2, 1] = bad
        leaf = torch.tensor(row, requires_grad=True)
        expected = F.cross_entropy(leaf, torch.from_numpy(t), reduction="none")
        expected.sum().backward()
        assert_close(anyloss.cross_entropy(row, t, reduction="none"), expected.detach().numpy(),
                     **FLOAT64)
        loss, grad = anyloss.cross_entropy_and_grad(row, t, reduction="none")
        assert_close(loss, expected.detach().numpy(), **FLOAT64)
        assert_close(grad, leaf.grad.numpy(), **FLOAT64)
    for function in (anyloss.cross_entropy, anyloss.cross_entropy_and_grad):
        with pytest.raises(IndexError, match=r"Target 5 is out of bounds\."):
            function(x, np.where(t == t[0], 5, t))


def _check_plain_declines(plain, x, t, options):
    assert plain(x, t, None, **options) is not NotImplemented
    for args in [
        (x, t.astype(np.int32), None),  # narrow targets
        (np.asfortranarray(x), t, None),  # not C-contiguous
        (x.astype(np.float16), t, None),
        (x[0], t[0], None),  # unbatched
        (x.reshape(8, 5, 1), t.reshape(8, 1), None),  # K-dimensional
        (x, t, np.ones(5, np.float32)),  # a weight of another dtype
        (x, t, np.ones(4)),  # a weight of the wrong size
        (x, t[:7], None),
        (x[:0], t[:0], None),
        (x, np.where(t == 0, 5, t), None),  # a target out of range
        (x, np.where(t == 0, -1, t), None),
    ]:
        assert plain(*args, **options) is NotImplemented
    assert plain(x, t, None, **{**options, "ignore_index": np.int64(-100)}) is NotImplemented
    assert plain(x, t, None, **{**options, "reduction": "batchmean"}) is NotImplemented
    for bad in (np.nan, np.inf, -np.inf):
        row = x.copy()
        row[2, :] = -np.inf if bad == -np.inf else row[2, :]
        row[2, 1] = bad
        assert plain(row, t, None, **options) is NotImplemented


COMPILED_CASES = [
    "plain", "plain/weight", "plain/smooth", "plain/smooth/weight", "plain/smooth/ignore/weight",
    "plain/ignore", "unbatched/smooth/weight", "one-class/smooth", "long", "long/smooth/weight",
    "long/smooth/ignore", "wide/smooth/weight", "k-dim", "k-dim/smooth/ignore/weight",
    "k-dim-1/ignore/weight", "k-dim-wide/smooth/ignore/weight", "k-dim-wide/smooth",
    "all-ignored", "logits-1e4",
]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", COMPILED_CASES)
def test_compiled_engine_equals_numpy_engine_and_torch(case, dtype, monkeypatch):
    """Every option, K-dim and unbatched input, float64 and float32: the compiled engine
    (alone: the NumPy rows refuse to run) against torch in float64, element by element,
    and against the NumPy engine; K-dim also by column blocks of 16 positions."""
    x, target, weight, options = _problem(case, dtype)
    weight = weight.astype(dtype)
    w = weight if options.get("weight") else None
    kwargs = {k: v for k, v in options.items() if k != "weight"}
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    grad_tol = {"rtol": 1e-10, "atol": 1e-13} if dtype == np.float64 else {
        "rtol": 1e-4, "atol": 1e-6}
    for reduction in REDUCTIONS:
        expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
        with monkeypatch.context() as m:
            _refuse_numpy_rows(m)
            m.setattr(numpy_backend, "_CE_COLUMN_ELEMENTS", 1 << 16)
            fast = _both(x, target, w, reduction, kwargs)
            m.setattr(numpy_backend, "_CE_COLUMN_ELEMENTS", 16)
            narrow = _both(x, target, w, reduction, kwargs)
        for loss, loss2, grad in (fast, narrow):
            assert loss.dtype == loss2.dtype == grad.dtype == dtype
            assert_close(loss, expected_loss, **tol)
            assert_close(loss2, expected_loss, **tol)
            assert_close(grad, expected_grad, **grad_tol)
        for a, b in zip(fast, narrow, strict=True):
            np.testing.assert_array_equal(a, b)  # the column blocking is exact
        with monkeypatch.context() as m:
            _numpy_engine(m, False)
            slow = _both(x, target, w, reduction, kwargs)
        _registry._clear_caches()
        for k, (a, b) in enumerate(zip(fast, slow, strict=True)):
            # float64: 1e-12 of each element; of the gradient's largest element for the
            # gradient (k == 2), whose elements are differences (softmax minus the smoothing
            # spread) that can cancel: the two engines sum a row's exponentials in
            # different orders.
            scale = float(np.nanmax(np.abs(b))) if k == 2 else 0.0
            exact = {"rtol": 1e-12, "atol": 1e-12 * scale}
            assert_close(a, b, **(tol if dtype == np.float32 else exact))


def _rows_apart(layout, dtype):
    """``(x, contiguous copy)``: an ``(N, C)`` input whose columns are adjacent and whose rows
    lie apart, of a named ``layout``."""
    g = np.random.default_rng(zlib.crc32(layout.encode()))
    n, c = {"sliced-long": (40, 3000), "sliced-short": (300, 100), "sliced-256": (64, 256),
            "reversed": (50, 700), "one-column": (30, 1)}[layout]
    wide = (3 * g.standard_normal((n, c + 37))).astype(dtype)
    x = wide[::-1, :c] if layout == "reversed" else wide[:, 5:c + 5]
    assert not x.flags.c_contiguous and x.strides[1] == x.itemsize
    return x, np.ascontiguousarray(x)


@needs_numba
@pytest.mark.parametrize("targets", [np.int64, np.int32])
@pytest.mark.parametrize("options", ["", "smooth/weight/ignore"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["sliced-long", "sliced-short", "sliced-256", "reversed",
                                    "one-column"])
def test_rows_apart_take_the_compiled_rows(layout, dtype, options, targets, monkeypatch):
    """An input whose rows lie apart (``a[:, :C]`` of a wider ``a``, rows reversed) takes the
    compiled row kernels as it is (the NumPy engine refuses to run): its losses and
    gradient equal, bit for bit, those of its C-contiguous copy, by the plain kernels
    (int64 targets) and the checked pass (int32 targets), and torch's."""
    x, contiguous = _rows_apart(layout, dtype)
    n, c = x.shape
    g = np.random.default_rng(n * c)
    target = g.integers(0, c, n).astype(targets)
    kwargs = {"label_smoothing": 0.2} if options else {}
    w = g.uniform(0.2, 2.0, c).astype(dtype) if options else None
    if options:
        target[::4] = -100
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        with monkeypatch.context() as m:
            _refuse_numpy_rows(m)
            got = _both(x, target, w, reduction, kwargs)
        want = _both(contiguous, target, w, reduction, kwargs)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        assert got[2].flags.c_contiguous
        expected_loss, expected_grad = _torch_expected(
            x.astype(np.float64), target.astype(np.int64), w,
            {"weight": w is not None, **kwargs}, reduction)
        assert_close(got[0], expected_loss, **tol)
        assert_close(got[2], expected_grad, **(tol if dtype == np.float64 else
                                               {"rtol": 1e-4, "atol": 1e-6}))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_apart_non_finite_rows_are_torchs(dtype):
    """Rows holding nan or +-inf in an input whose rows lie apart: redone by the NumPy
    engine on the strided rows, as torch has them, equal to the contiguous copy's."""
    for layout in ("sliced-long", "sliced-short"):
        x, _ = _rows_apart(layout, dtype)  # a view of an array of its own
        x[1, 3], x[2, 0], x[3, :] = np.nan, np.inf, -np.inf
        target = np.zeros(x.shape[0], np.int64)
        for reduction in ("none", "sum"):
            loss, grad = anyloss.cross_entropy_and_grad(x, target, reduction=reduction)
            want_loss, want_grad = anyloss.cross_entropy_and_grad(
                np.ascontiguousarray(x), target, reduction=reduction)
            np.testing.assert_array_equal(loss, want_loss)
            np.testing.assert_array_equal(grad, want_grad)
            expected_loss, expected_grad = _torch_expected(x.astype(np.float64), target, None,
                                                           {}, reduction)
            tol = FLOAT64 if dtype == np.float64 else FLOAT32
            assert_close(loss, expected_loss, **tol)
            assert_close(grad, expected_grad, **tol)


@needs_numba
@pytest.mark.parametrize("case", ["plain/smooth/ignore/weight", "long/smooth",
                                  "k-dim-wide/smooth/ignore/weight"])
def test_compiled_float16_by_chunks(case, monkeypatch, no_numpy_rows):
    """float16 input, computed in float32 by chunks of one sample and of all samples:
    the same result either way, close to torch's float32 computation."""
    x, target, weight, options = _problem(case, np.float16)
    weight = weight.astype(np.float16)
    w = weight if options.get("weight") else None
    kwargs = {k: v for k, v in options.items() if k != "weight"}
    expected_loss, expected_grad = _torch_expected(x.astype(np.float32), target,
                                                   weight.astype(np.float32), options, "none")
    results = []
    for chunk in (1, 1 << 20):
        monkeypatch.setattr(numpy_backend, "_CE_HALF_CHUNK_ELEMENTS", chunk)
        loss, _, grad = _both(x, target, w, "none", kwargs)
        assert loss.dtype == grad.dtype == np.float16
        np.testing.assert_allclose(loss, expected_loss, rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-2, atol=1e-4)
        results.append((loss, grad))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


@needs_numba
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_compiled_float16_is_the_float32_pass_rounded(reduction):
    """float16 input gives the float32 input's losses and gradient, each rounded once to
    float16 by NumPy's cast (with 'mean' over 64 x 2000 most of the gradient is subnormal
    in float16)."""
    g = np.random.default_rng(8)
    x = (3 * g.standard_normal((64, 2000))).astype(np.float16)
    target = g.integers(0, 2000, 64)
    loss, grad = anyloss.cross_entropy_and_grad(x, target, reduction=reduction,
                                                label_smoothing=0.1)
    loss32, grad32 = anyloss.cross_entropy_and_grad(x.astype(np.float32), target,
                                                    reduction=reduction, label_smoothing=0.1)
    assert grad.dtype == np.float16
    np.testing.assert_array_equal(grad, grad32.astype(np.float16))
    if reduction == "none":
        np.testing.assert_array_equal(loss, loss32.astype(np.float16))
    else:  # the values whose NumPy cast took 70 ns each
        assert np.mean(np.abs(grad) < np.finfo(np.float16).smallest_normal) > 0.5


#: Classes of the non-finite problems: rows shorter than the row kernels' lanes (their path
#: for short rows), and of two chunks.
NON_FINITE_CLASSES = [100, 3000]


#: R's ``NA`` (a nan whose low bits carry 1954), and a float32 nan of the same payload: the
#: kernels must not read a nan's payload bits as a number (see ``_times_power64``).
PAYLOAD_NAN = {np.float64: np.uint64(0x7FF00000000007A2), np.float32: np.uint32(0x7F8007A2)}


def _non_finite_problem(dtype, k_dim, c):
    """Rows (or positions) holding nan (first, middle and last class, and one with a
    payload in its low bits), +inf (target and not), two +inf, -inf, all -inf, and finite
    rows, of ``c`` classes."""
    g = np.random.default_rng(7)
    x = g.standard_normal((12, c)).astype(dtype)
    target = g.integers(0, c, 12)
    x[0, 0] = np.nan
    x[1, c // 2] = np.nan
    x[2, c - 1] = np.nan
    x[3, target[3]] = np.inf
    x[4, (target[4] + 1) % c] = np.inf
    x[5, :2] = np.inf
    x[6, (target[6] + 5) % c] = -np.inf
    x[7, :] = -np.inf
    x[8, target[8]] = -np.inf
    x[9, (target[9] + 1) % c] = PAYLOAD_NAN[dtype].view(dtype)
    if k_dim:  # (3, C, 4): the same twelve rows as positions
        x = np.ascontiguousarray(x.reshape(3, 4, c).transpose(0, 2, 1))
        target = target.reshape(3, 4)
    return x, target


@needs_numba
@pytest.mark.parametrize("classes", NON_FINITE_CLASSES)
@pytest.mark.parametrize("k_dim", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_compiled_non_finite_rows_are_torchs(dtype, k_dim, smoothing, classes):
    """nan anywhere in a row gives nan; inf and -inf logits give torch's losses and
    gradients (the flagged rows are redone by the NumPy engine), finite rows beside
    them stay exact."""
    x, target = _non_finite_problem(dtype, k_dim, classes)
    weight = np.random.default_rng(8).uniform(0.5, 2, x.shape[1]).astype(dtype)
    for w in (None, weight):
        for reduction in ("none", "sum"):
            tw = None if w is None else torch.from_numpy(w)
            leaf = torch.tensor(x, requires_grad=True)
            expected = F.cross_entropy(leaf, torch.from_numpy(target), tw, reduction=reduction,
                                       label_smoothing=smoothing)
            expected.sum().backward()
            loss, grad = anyloss.cross_entropy_and_grad(x, target, w, reduction=reduction,
                                                        label_smoothing=smoothing)
            tol = FLOAT64 if dtype == np.float64 else FLOAT32
            assert_close(loss, expected.detach().numpy(), **tol)
            assert_close(anyloss.cross_entropy(x, target, w, reduction=reduction,
                                               label_smoothing=smoothing),
                         expected.detach().numpy(), **tol)
            assert_close(grad, leaf.grad.numpy(), rtol=1e-4, atol=1e-6)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("classes", [1, 255, 256, 257, 511, 512, 513, 768, 1031, 2304])
def test_row_kernels_maxima_and_sums(classes, dtype):
    """The row kernels' per-row shift and sum of exponentials against NumPy's, for rows
    of 0 to 9 whole blocks of ``LANES`` (odd and even counts: the running maxima alternate
    between two buffers) with and without a tail, each row's maximum placed in turn in the
    first block, the last whole block and the tail; forward and gradient kernels (into an
    array of its own and over the input), one and two threads.

    The shift is the row's maximum, except for the rows of ``LANES`` classes or more of the
    forward and of the gradient into its own array, which are summed in one pass shifted
    by the maximum of their first ``LANES`` values."""
    kernels = compiled.load("cross_entropy")
    g = np.random.default_rng(classes)
    n = 9
    x = g.standard_normal((n, classes)).astype(dtype)
    for i, c in enumerate(g.integers(0, classes, n)):
        x[i, c] = 6.0  # the maximum somewhere
    x[0, 0] = x[1, classes - 1] = 7.0
    x[2, max(0, classes - classes % kernels.LANES - 1)] = 7.0  # the last whole block's end
    maxima = x.max(axis=1)
    shifted = classes >= kernels.LANES
    shifts = x[:, :kernels.LANES].max(axis=1) if shifted else maxima
    if shifted and classes > kernels.LANES:
        assert (shifts < maxima).any()  # the two differ in some rows

    def expected_total(shift):
        return np.exp(x.astype(np.float64) - shift[:, None].astype(np.float64)).sum(axis=1)

    w = np.ones(1, dtype)
    # float32 sums of up to 2304 terms, each rounded to float32 (1e-6 was passed over by
    # 1.16e-6 in the gradient over the input, whose loop is vectorised apart)
    rtol = 1e-13 if dtype == np.float64 else 4e-6
    softmax = np.exp(x - x.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)  # the gradient at factor 1, spread and hit 0
    for threads in (1, 2):
        with anyloss.threads(threads):
            blocks = kernels.row_blocks(n)
            peak, total = np.empty(n, dtype), np.empty(n)
            smooth, bad = np.empty(n), np.empty(n, np.uint8)
            kernels.forward_rows(blocks, x, w, False, peak, total, smooth, bad)
            np.testing.assert_array_equal(peak, shifts)
            np.testing.assert_array_equal(bad, 0)
            np.testing.assert_allclose(total, expected_total(shifts), rtol=rtol)
            target = np.zeros(n, np.int64)
            ones, zeros = np.ones(n, dtype), np.zeros(n, dtype)
            for out, shift in ((np.empty_like(x), shifts), (None, maxima)):
                a = np.empty(n, dtype)
                source = x.copy()  # the gradient over the input (out None) writes it
                peak[:], total[:], bad[:] = 0, 0, 1
                kernels.gradient_rows(blocks, source, target, w, False, ones, zeros, zeros, peak,
                                      total, smooth, bad, a, out)
                np.testing.assert_array_equal(peak, shift)
                np.testing.assert_array_equal(bad, 0)
                np.testing.assert_allclose(total, expected_total(shift), rtol=rtol)
                np.testing.assert_allclose(source if out is None else out, softmax,
                                           rtol=10 * rtol, atol=rtol)


#: Per dtype, how far below the rest the first block of the rows of
#: ``test_shifted_rows_far_below_their_maximum`` lies: summed at that shift, past
#: ``SHIFTED_TOTAL_LIMIT``, a term overflowing.
FAR_BELOW = {np.float64: (300.0, 400.0, 1000.0), np.float32: (30.0, 60.0, 100.0)}


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_shifted_rows_far_below_their_maximum(dtype, smoothing):
    """Rows of ``LANES`` classes or more are summed shifted by the maximum of their first
    ``LANES`` values. Rows whose first block lies far below the rest (:data:`FAR_BELOW`):
    300 below in float64 (30 in float32) is summed at that shift, as is a confident row 29
    below; 400 (60) below passes ``SHIFTED_TOTAL_LIMIT`` and 1000 (100) below overflows a
    term, and a first block all -inf is no shift at all: those rows are done again with
    their maximum. Losses and gradients are torch's (the dtype's tolerance), each row's
    shift as described."""
    kernels = compiled.load("cross_entropy")
    g = np.random.default_rng(17)
    n, c, lanes = 6, 1000, kernels.LANES
    kept, limited, overflowing = FAR_BELOW[dtype]
    x = g.standard_normal((n, c)).astype(dtype)
    x[1, :lanes] -= kept
    x[2, :lanes] -= limited
    x[3, :lanes] -= overflowing
    x[4, :lanes] = -np.inf
    x[5, :lanes] -= 20.0
    x[5, 600] = 12.0  # a confident row, 29 above its shift: a loss of about 0.01
    target = np.arange(n) * 100
    target[5] = 600
    limit = kernels.SHIFTED_TOTAL_LIMIT[np.dtype(dtype).name]
    assert np.exp(kept) < limit < np.exp(limited - 2 * np.log(c))
    assert overflowing - 2 > np.log(np.finfo(dtype).max)  # some term overflows

    peak, total = np.empty(n, dtype), np.empty(n)
    smooth, bad = np.empty(n), np.empty(n, np.uint8)
    w = np.ones(c, dtype)
    kernels.forward_rows(kernels.row_blocks(n), x, w, smoothing > 0, peak, total, smooth, bad)
    np.testing.assert_array_equal(bad, 0)
    first, maxima = x[:, :lanes].max(axis=1), x.max(axis=1)
    np.testing.assert_array_equal(peak, np.where(np.isin(np.arange(n), [0, 1, 5]), first,
                                                 maxima))
    assert total[1] > np.exp(kept - 10)

    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        leaf = torch.tensor(x, requires_grad=True)
        expected = F.cross_entropy(leaf, torch.from_numpy(target), reduction=reduction,
                                   label_smoothing=smoothing)
        expected.sum().backward()
        loss = anyloss.cross_entropy(x, target, reduction=reduction, label_smoothing=smoothing)
        loss2, grad = anyloss.cross_entropy_and_grad(x, target, reduction=reduction,
                                                     label_smoothing=smoothing)
        assert_close(loss, expected.detach().numpy(), **tol)
        assert_close(loss2, expected.detach().numpy(), **tol)
        assert_close(grad, leaf.grad.numpy(), **tol)


@needs_numba
@pytest.mark.parametrize("case", ["long/smooth/ignore/weight", "long/smooth/ignore",
                                  "k-dim-wide/smooth/ignore/weight", "plain/smooth"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_result_does_not_depend_on_threads(case, dtype):
    """Each row is one thread's work: 2 and 3 threads (the parallel copy of the kernels,
    cut differently) agree bit for bit. One thread runs the serial copy, compiled apart:
    with fastmath's reassociation LLVM may vectorise a row's sums differently in each
    copy (seen on znver4: the weighted smoothing case, one ulp in some rows' sums, up to
    5e-12 relative in the gradient's near-cancelling elements), so it agrees within a
    few ulps of the terms."""
    x, target, weight, options = _problem(case, dtype)
    x = np.tile(x, (40,) + (1,) * (x.ndim - 1))  # enough rows for every thread
    target = np.tile(target, (40,) + (1,) * (target.ndim - 1))
    w = weight.astype(dtype) if options.get("weight") else None
    kwargs = {k: v for k, v in options.items() if k != "weight"}
    runs = {}
    for n in (1, 2, 3):
        with anyloss._threads.threads(n):
            runs[n] = _both(x, target, w, "none", kwargs)
    for a, b in zip(runs[2], runs[3], strict=True):
        np.testing.assert_array_equal(a, b)
    eps = np.finfo(dtype).eps
    for a, b in zip(runs[1], runs[2], strict=True):
        scale = np.max(np.abs(a)) if a.size else 1.0
        np.testing.assert_allclose(a, b, rtol=8 * eps, atol=8 * eps * scale)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_exp_within_one_ulp(dtype):
    """The kernels' polynomial exp (the values they write) against float64's exp on
    (-87, 0] (float32) and (-708, 0] (float64), and 0 below: within 1 ulp in float64 and
    1.25 in float32, compiled as the kernels compile it (their fast-math flags, fused
    multiply-adds). Cephes' float32 polynomial reached 1.236 ulp there (at -70.9997), 0.96
    compiled without the flags, which is how this test called it before 2026-12-06."""
    import numba

    kernels = compiled.load("cross_entropy")

    @numba.njit(fastmath=kernels.FLAGS)
    def run(a, out):
        for i in range(a.shape[0]):
            out[i] = kernels.exp(a[i])

    g = np.random.default_rng(9)
    low = -87.0 if dtype == np.float32 else -708.0
    a = np.concatenate([-g.uniform(0, -low, 200_000), -g.uniform(0, 1e-3, 1000),
                        [0.0, -0.0, low, -1e-30]]).astype(dtype)
    out = np.empty_like(a)
    run(a, out)
    exact = np.exp(a.astype(np.float64)) if dtype == np.float32 else np.exp(a)
    ulps = np.abs(out - exact) / np.spacing(exact.astype(dtype))
    assert ulps.max() <= (1.25 if dtype == np.float32 else 1.0), ulps.max()
    below = np.asarray([low - 0.5, -1e4, -np.inf], dtype=dtype)
    out = np.empty_like(below)
    run(below, out)
    np.testing.assert_array_equal(out, 0.0)


def test_without_numba_every_option_is_torchs(monkeypatch):
    """The NumPy fallback (numba switched off) on rows and K-dim, every option."""
    _numpy_engine(monkeypatch, False)
    try:
        for case in ("long/smooth/ignore/weight", "k-dim-wide/smooth/ignore/weight"):
            x, target, weight, options = _problem(case)
            w = weight if options.get("weight") else None
            kwargs = {k: v for k, v in options.items() if k != "weight"}
            for reduction in REDUCTIONS:
                expected_loss, expected_grad = _torch_expected(x, target, weight, options,
                                                               reduction)
                loss, loss2, grad = _both(x, target, w, reduction, kwargs)
                assert_close(loss, expected_loss, **FLOAT64)
                assert_close(loss2, expected_loss, **FLOAT64)
                assert_close(grad, expected_grad, rtol=1e-10, atol=1e-13)
    finally:
        monkeypatch.undo()
        _registry._clear_caches()


# --- JAX and Dask specifics --------------------------------------------------------------


def test_jax_fast_path_jits_and_differentiates():
    jax = pytest.importorskip("jax")
    ns = _ns("jax")
    x, target, weight, options = _problem("k-dim/smooth/ignore/weight")
    jnp = jax.numpy
    args = (jnp.asarray(x), jnp.asarray(target), jnp.asarray(weight))

    def loss(a, t, w):
        return anyloss.cross_entropy(a, t, w, label_smoothing=0.25)

    expected_loss, expected_grad = _torch_expected(x, target, weight, options, "mean")
    assert_close(np.asarray(jax.jit(loss)(*args)), expected_loss, **FLOAT64)
    assert_close(np.asarray(jax.jit(jax.grad(loss))(*args)), expected_grad, **FLOAT64)
    jitted = jax.jit(lambda a, t, w: anyloss.cross_entropy_and_grad(a, t, w,
                                                                     label_smoothing=0.25))
    got_loss, got_grad = jitted(*args)
    assert_close(np.asarray(got_loss), expected_loss, **FLOAT64)
    assert_close(np.asarray(got_grad), expected_grad, rtol=1e-6, atol=1e-9)
    assert ns.name == "jax"


def test_jax_fast_path_has_no_one_hot_over_classes():
    """The jaxpr gathers the target logit; no (N, C) integer comparison with arange(C)."""
    jax = pytest.importorskip("jax")
    _ns("jax")
    jnp = jax.numpy
    x, target = jnp.zeros((8, 1000)), jnp.zeros(8, dtype=jnp.int32)
    text = str(jax.make_jaxpr(lambda a, t: anyloss.cross_entropy(a, t))(x, target))
    assert "gather" in text and "iota" not in text


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dask_fast_path_stays_lazy(reduction):
    dask = pytest.importorskip("dask")
    from helpers import CountingScheduler

    ns = _ns("dask")
    x, target, weight, options = _problem("k-dim/smooth/ignore/weight")
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        loss = _call(anyloss.cross_entropy, ns, x, target, weight, options, reduction)
        pair = _call(anyloss.cross_entropy_and_grad, ns, x, target, weight, options, reduction)
        assert scheduler.computes == 0
        got_loss, got_pair_loss, got_grad = dask.compute(loss, *pair)
        assert scheduler.computes == 1
    expected_loss, expected_grad = _torch_expected(x, target, weight, options, reduction)
    assert_close(got_loss, expected_loss, **FLOAT64)
    assert_close(got_pair_loss, expected_loss, **FLOAT64)
    assert_close(got_grad, expected_grad, rtol=1e-6, atol=1e-9)


#: Dask cases of class probabilities: shape, chunks, where a nan goes, chunks after the
#: class axis is gathered.
DASK_PROBABILITIES = {
    "rows": ((60, 300), ((20, 25, 15), (100, 200)), (17, 4), 3),
    "k-dim": ((12, 30, 10, 4), ((5, 7), (10, 20), (4, 6), (4,)), (3, 4, 2, 1), 4),
}


@pytest.mark.parametrize("layout", sorted(DASK_PROBABILITIES))
@pytest.mark.parametrize("engine", ["rows", "formula"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dask_probabilities_by_row_chunks(dtype, engine, layout, monkeypatch):
    """Class probabilities of a 2-d or K-dimensional Dask array: one NumPy kernel call per
    chunk (batch and spatial axes chunked, the class axis gathered) for the loss, one for
    loss and gradient together (the formula on the chunk where the kernels decline: numba
    switched off here, and a chunk holding nan in either engine), lazily, equal to torch
    for every reduction, weight and smoothing included."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    from helpers import CountingScheduler

    if engine == "formula":
        _numpy_engine(monkeypatch, False)
    shape, chunks, nan_at, n_chunks = DASK_PROBABILITIES[layout]
    x, target = _probability_problem(shape, dtype)
    x[nan_at] = np.nan
    weight = np.random.default_rng(5).uniform(0.5, 2.0, shape[1]).astype(dtype)
    calls = []
    rows = numpy_backend.probability_losses
    monkeypatch.setattr(numpy_backend, "probability_losses",
                        lambda *args, **kwargs: calls.append(1) or rows(*args, **kwargs))
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        dx, dt = da.from_array(x, chunks=chunks), da.from_array(target, chunks=chunks)
        dw = da.from_array(weight, chunks=shape[1] // 2)
        scheduler = CountingScheduler()
        calls.clear()
        with dask.config.set(scheduler=scheduler):
            loss = anyloss.cross_entropy(dx, dt, dw, reduction=reduction, label_smoothing=0.1)
            pair = anyloss.cross_entropy_and_grad(dx, dt, dw, reduction=reduction,
                                                  label_smoothing=0.1)
            assert scheduler.computes == 0
            got_loss, got_pair_loss, got_grad = dask.compute(loss, *pair)
            assert scheduler.computes == 1
        assert len(calls) == 2 * n_chunks  # each chunk once for the loss, once for the pair
        leaf = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        expected = F.cross_entropy(leaf, torch.tensor(target, dtype=torch.float64),
                                   torch.tensor(weight, dtype=torch.float64),
                                   reduction=reduction, label_smoothing=0.1)
        expected.sum().backward()
        for got in (got_loss, got_pair_loss):
            assert got.dtype == dtype
            assert_close(got, expected.detach().numpy(), **tol)
        assert got_grad.dtype == dtype
        assert_close(got_grad, leaf.grad.numpy(), **(tol if dtype == np.float64 else
                                                     {"rtol": 1e-4, "atol": 1e-6}))


def _kernel_exponentials(x):
    """``(exp_written(x), sum_term(x))`` elementwise: the row kernels' two
    exponentials, compiled with the kernels' fast-math flags."""
    import numba

    kernels = compiled.load("cross_entropy")

    @numba.njit(fastmath=kernels.FLAGS)
    def both(x, written, summed):
        for i in range(x.shape[0]):
            written[i] = kernels.exp_written(x[i])
            summed[i] = kernels.sum_term(x[i])

    written, summed = np.empty_like(x), np.empty_like(x)
    both(x, written, summed)
    return written, summed


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_exponentials_within_one_ulp(dtype):
    """The row kernels' two exponentials of ``x <= 0``, over a million points of
    [-750, 0] (every binade down to the flush point): ``exp_written`` (values written)
    within 1 ulp of the float64-rounded exponential where it is a normal number and 0
    below; nan for nan.

    ``sum_term`` (values only summed into a sum holding 1) reduces by ln 2 in one part:
    within the same bound where ``k = round(x / ln2)`` is 0 (in float64, whose summed terms
    take a polynomial within 3 ulp, 4.5 ulp), and 1 exactly at 0; elsewhere, on terms of at
    most ``2^(k + 1/2)``, within ``|k| delta`` more (relative), with ``delta`` the
    rounding error of ln 2 in ``x``'s dtype (derived here from mpmath), and in float32
    half an ulp more (1.07 ulp beyond ``|k| delta`` was measured there, on 2026-12-05);
    exactly the flush point's value below it."""
    mpmath = pytest.importorskip("mpmath")

    g = np.random.default_rng(11)
    flush = dtype(-87.0) if dtype == np.float32 else dtype(-708.0)
    x = np.concatenate([-np.exp(g.uniform(-20, np.log(750), 1_000_000)), [0.0, -0.0, flush],
                        -g.uniform(0, 1e-30, 1000), [np.nan]]).astype(dtype)
    written, summed = _kernel_exponentials(x)
    exact = np.exp(x.astype(np.float64)).astype(dtype)  # float32: float64's exp rounded once
    if dtype == np.float64:
        exact = np.exp(x)  # NumPy's float64 exp: within 1 ulp itself; allow 2 together
    normal = (x >= flush) & ~np.isnan(x)
    bound = 1.0 if dtype == np.float32 else 2.0
    ulps = np.abs(written[normal] - exact[normal]) / np.spacing(exact[normal])
    assert ulps.max() <= bound, ulps.max()
    np.testing.assert_array_equal(written[x < flush], 0)
    assert np.isnan(written[-1]) and np.isnan(summed[-1])

    with mpmath.workdps(40):
        delta = float(abs(mpmath.mpf(float(dtype(np.log(2)))) - mpmath.log(2)))
    k = np.abs(np.rint(x[normal].astype(np.float64) / np.log(2)))
    summed_ulps = np.abs(summed[normal] - exact[normal]) / np.spacing(exact[normal])
    # float64: a polynomial within 3 ulp of the terms in [1/2, 1) (3.3e-16 relative), the
    # product's rounding and NumPy's own ulp (3.0 measured on 2026-12-06)
    summed_bound = bound if dtype == np.float32 else 4.5
    assert summed_ulps[k == 0].max() <= summed_bound, summed_ulps[k == 0].max()
    np.testing.assert_array_equal(summed[x == 0], 1)  # the row's shift: a term 1 exactly
    allowed = (summed_bound + (0.5 if dtype == np.float32 else 0.0)
               + k * delta / (np.finfo(dtype).eps / 2))
    assert (summed_ulps <= allowed).all(), (summed_ulps - allowed).max()
    assert (k * delta / (np.finfo(dtype).eps / 2)).max() > 1  # the one-part reach is tested
    np.testing.assert_array_equal(summed[x < flush], summed[x == flush][0])


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_exponentials_of_positive_x(dtype):
    """The exponentials also take the positive ``x`` of rows shifted below their maximum:
    within the bounds of :func:`test_kernel_exponentials_within_one_ulp` up to where ``k =
    round(x / ln 2)`` reaches the exponent's top (1024 in float64, from 709.44; 128 in
    float32, from 88.38), +inf from there and beyond, nan for nan."""
    mpmath = pytest.importorskip("mpmath")
    g = np.random.default_rng(13)
    top_k = 1024 if dtype == np.float64 else 128
    top = (top_k - 0.5) * np.log(2)  # where k reaches top_k
    x = np.concatenate([np.exp(g.uniform(-20, np.log(top), 1_000_000)),
                        [np.nextafter(dtype(top), dtype(0))]]).astype(dtype)
    written, summed = _kernel_exponentials(x)
    if dtype == np.float64:
        exact = np.exp(x)  # NumPy's float64 exp: within 1 ulp itself; allow 2 together
        bound, summed_bound = 2.0, 4.5
    else:
        exact = np.exp(x.astype(np.float64)).astype(dtype)  # float64's exp rounded once
        bound, summed_bound = 1.25, 1.5
    assert np.isfinite(exact).all()
    ulps = np.abs(written - exact) / np.spacing(exact)
    assert ulps.max() <= bound, ulps.max()
    with mpmath.workdps(40):
        delta = float(abs(mpmath.mpf(float(dtype(np.log(2)))) - mpmath.log(2)))
    k = np.rint(x.astype(np.float64) / np.log(2))
    assert k.max() == top_k - 1
    summed_ulps = np.abs(summed - exact) / np.spacing(exact)
    allowed = summed_bound + k * delta / (np.finfo(dtype).eps / 2)
    assert (summed_ulps <= allowed).all(), (summed_ulps - allowed).max()
    beyond = np.array([np.nextafter(dtype(top), dtype(np.inf)), top + 0.4, top + 1.0, 1e4,
                       np.finfo(dtype).max, np.inf], dtype)
    written, summed = _kernel_exponentials(beyond)
    assert (written == np.inf).all() and (summed == np.inf).all(), (written, summed)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [{}, {"weight": True, "label_smoothing": 0.1,
                                          "ignore_index": 3}])
def test_fortran_order_input_is_taken_without_a_copy(dtype, options):
    """A transposed (Fortran-order) ``(N, C)`` input is read in place, as ``(1, C, N)``, by
    the column kernels; its losses and gradient (every reduction) are torch's."""
    g = np.random.default_rng(5)
    n, c = 300, 257
    x = np.asfortranarray((3 * g.standard_normal((n, c))).astype(dtype))
    target = g.integers(0, c, n)
    target[:4] = 3
    weight = g.uniform(0.5, 2, c).astype(dtype) if options.get("weight") else None
    kwargs = {k: v for k, v in options.items() if k != "weight"}
    x3, t2 = numpy_backend._ce_problem(x, target)
    assert x3.shape == (1, c, n) and x3.flags.c_contiguous and np.shares_memory(x3, x)
    np.testing.assert_array_equal(t2[0], target)
    tol = FLOAT64 if dtype == np.float64 else FLOAT32
    for reduction in REDUCTIONS:
        leaf = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
        expected = F.cross_entropy(leaf, torch.from_numpy(target),
                                   None if weight is None else torch.from_numpy(weight),
                                   reduction=reduction, **kwargs)
        expected.sum().backward()
        loss = anyloss.cross_entropy(x, target, weight, reduction=reduction, **kwargs)
        loss2, grad = anyloss.cross_entropy_and_grad(x, target, weight, reduction=reduction,
                                                     **kwargs)
        assert_close(loss, expected.detach().numpy(), **tol)
        assert_close(loss2, expected.detach().numpy(), **tol)
        assert grad.shape == x.shape and grad.dtype == x.dtype
        assert_close(grad, leaf.grad.numpy(), rtol=1e-4, atol=1e-9)
    # A gradient written into an ``out`` that the pass could only reach through a copy would
    # be lost: refused (the linear cross entropy passes C-order logits as ``out``).
    with pytest.raises(ValueError, match="Fortran-order"):
        numpy_backend.cross_entropy_rows(x, target, weight, ignore_index=-100,
                                         label_smoothing=0.0, gradient_scale=1.0, out=x)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_exponentials_of_every_nan_are_nan(dtype):
    """Both exponentials of the row kernels give nan for every nan, whatever its sign,
    quiet bit and payload: every pattern of the low 16 mantissa bits (where the float64
    exponentials take ``2^k`` from, as integer bits), and random payloads."""
    bits = np.uint64 if dtype == np.float64 else np.uint32
    mantissa = np.finfo(dtype).nmant
    exponent = np.asarray(np.inf, dtype).view(bits)  # all ones
    quiet = np.asarray(1, bits) << bits(mantissa - 1)
    sign = np.asarray(1, bits) << bits(8 * np.dtype(dtype).itemsize - 1)
    low = np.arange(1, 1 << 16, dtype=bits)
    random = np.random.default_rng(3).integers(1, (1 << mantissa) - 1, 4096).astype(bits)
    payloads = np.concatenate([low, random])
    patterns = np.concatenate([exponent | payloads, exponent | quiet | payloads,
                               sign | exponent | payloads, [sign | exponent | quiet]])
    x = patterns.view(dtype)
    assert np.isnan(x).all()
    written, summed = _kernel_exponentials(x)
    assert np.isnan(written).all(), x[~np.isnan(written)].view(bits)
    assert np.isnan(summed).all(), x[~np.isnan(summed)].view(bits)


@pytest.mark.parametrize("classes", NON_FINITE_CLASSES)
@pytest.mark.parametrize("engine", ["compiled", "numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradient_written_over_the_input(engine, dtype, smoothing, classes, monkeypatch):
    """``cross_entropy_rows(x, ..., out=x)`` (the linear cross entropy's row blocks) gives
    the losses and, over ``x``, the gradient of the pass into a separate array: finite
    rows within a few ulps (the in-place kernel is compiled apart, and LLVM may order a
    row's float32 sums differently in it), and the nan, inf and
    -inf rows of :func:`_non_finite_problem` as torch has them."""
    if engine == "compiled" and not compiled.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    _numpy_engine(monkeypatch, engine == "compiled")
    x, target = _non_finite_problem(dtype, False, classes)
    weight = np.random.default_rng(9).uniform(0.5, 2, x.shape[1]).astype(dtype)
    options = dict(ignore_index=-100, label_smoothing=smoothing, gradient_scale=0.3)
    separate = np.empty_like(x)
    losses = numpy_backend.cross_entropy_rows(x, target, weight, out=separate, **options)
    overwritten = x.copy()
    in_place = numpy_backend.cross_entropy_rows(overwritten, target, weight, out=overwritten,
                                                **options)
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    assert_close(in_place, losses, rtol=rtol, atol=0)
    # A gradient element is a difference (softmax minus the smoothing spread) that can
    # cancel: within rtol of the row's largest element.
    largest = np.max(np.where(np.isfinite(separate), np.abs(separate), 0.0), axis=1,
                     keepdims=True)  # over the finite elements, the only ones compared
    if smoothing == 0:  # no spread: no cancellation, each element within rtol
        assert_close(overwritten, separate, rtol=rtol, atol=0)
    finite = np.isfinite(separate)
    assert np.array_equal(finite, np.isfinite(overwritten))
    assert (np.abs(overwritten - separate)[finite]
            <= rtol * np.broadcast_to(largest, separate.shape)[finite]).all()
    leaf = torch.tensor(x, requires_grad=True)
    expected = F.cross_entropy(leaf, torch.from_numpy(target), torch.from_numpy(weight),
                               reduction="none", label_smoothing=smoothing)
    (0.3 * expected.sum()).backward()
    assert_close(in_place, expected.detach().numpy().astype(np.float64),
                 **(FLOAT64 if dtype == np.float64 else FLOAT32))
    assert_close(overwritten, leaf.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert np.isnan(overwritten[:3]).all()  # the rows holding a nan: nan throughout


def test_gradient_over_part_of_the_input_is_refused():
    x = np.random.default_rng(0).standard_normal((40, 1000))
    target = np.zeros(40, dtype=np.int64)
    with pytest.raises(ValueError, match="overlaps the input"):
        numpy_backend.cross_entropy_rows(x[:, 1:], target, None, ignore_index=-100,
                                         label_smoothing=0.0, gradient_scale=1.0,
                                         out=x[:, :-1])
