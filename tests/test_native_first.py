"""Kernels tried before anyloss's checks (registry stage ``'first'``).

On plain CPU torch calls, ``nll_loss``, ``cross_entropy`` and the two margin losses
over classes hand the public arguments to ``torch.nn.functional`` first; on NumPy,
``nll_loss`` and ``multilabel_margin_loss`` run one compiled (numba) loop. These tests
check the contract: the kernel runs where it should (a spy counts the calls), it is
declined where its result would not be anyloss's, its values are torch's, and every
error is still anyloss's own (type and wording), since a failing or declining kernel
falls back to the checked path.
"""

from __future__ import annotations

import numpy as np
import pytest

import anyloss
from anyloss import _registry
from anyloss.backends.numpy import compiled

torch = pytest.importorskip("torch")
F = torch.nn.functional
from anyloss.backends import torch as torch_backend  # noqa: E402 - needs torch

LOSSES = sorted({k.function for k in _registry.records(library="torch", stage="first")})


def _plain_call(loss: str, dtype=torch.float64):
    """Arguments of a plain call of ``loss`` on CPU tensors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, dtype=dtype)
    classes = torch.tensor([0, 3, 1, 2, 3])
    if loss == "nll_loss":
        return (torch.log_softmax(x, 1), classes), {}
    if loss == "multilabel_margin_loss":
        return (x, torch.tensor([[3, 0, -1, 1]] * 5)), {}
    return (x, classes), {}


def _count_answers(monkeypatch, library, losses):
    """Wraps the stage-'first' kernel of ``library`` for each of ``losses`` (its registry
    record says where it lives) to count, per loss, the calls it answered (did not
    decline); a generator for the fixtures below."""
    import importlib

    calls = {name: 0 for name in losses}
    for name in losses:
        (record,) = _registry.records(name, library, "first")
        module_name, attribute = record.target.split(":")
        module = importlib.import_module(f"anyloss.backends.{module_name}")
        original = getattr(module, attribute)

        def counting(*args, _name=name, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            calls[_name] += out is not NotImplemented
            return out

        monkeypatch.setattr(module, attribute, counting)
    _registry._clear_caches()
    yield calls
    _registry._clear_caches()


@pytest.fixture
def spy(monkeypatch):
    """Calls answered by torch's kernels, per loss."""
    yield from _count_answers(monkeypatch, "torch", LOSSES)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_plain_calls_run_the_native_twin(spy, loss, reduction):
    args, kwargs = _plain_call(loss)
    out = getattr(anyloss, loss)(*args, reduction=reduction, **kwargs)
    assert spy[loss] == 1
    with anyloss.fast_paths(enabled=False):
        generic = getattr(anyloss, loss)(*args, reduction=reduction, **kwargs)
    assert spy[loss] == 1  # switched off: the generic formula, the twin not asked
    np.testing.assert_allclose(out.numpy(), generic.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
def test_the_twin_carries_autograd(loss):
    (x, target), kwargs = _plain_call(loss)
    leaf = x.clone().requires_grad_(True)
    getattr(anyloss, loss)(leaf, target, **kwargs).backward()
    expected = x.clone().requires_grad_(True)
    getattr(F, loss)(expected, target, **kwargs).backward()
    torch.testing.assert_close(leaf.grad, expected.grad, rtol=0, atol=0)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("variant", ["float16", "int32-target", "empty"])
def test_declined_calls_take_the_checked_path(spy, loss, variant):
    (x, target), kwargs = _plain_call(loss)
    if variant == "float16":
        x = x.to(torch.float16)
    elif variant == "int32-target":
        target = target.to(torch.int32)  # torch refuses it; anyloss computes it
    else:
        x, target = x[:0], target[:0]
    out = getattr(anyloss, loss)(x, target, **kwargs)
    assert spy[loss] == 0
    if variant == "int32-target":
        expected = getattr(F, loss)(x, target.to(torch.int64), **kwargs)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-15)


def test_each_twin_declines_what_it_cannot_take():
    x = torch.zeros(2, 3)
    t = torch.zeros(2, dtype=torch.int64)
    nf = torch_backend
    assert nf.nll_loss(x.half(), t, None, ignore_index=-100,
                                    reduction="mean") is NotImplemented
    assert nf.nll_loss(x, t, torch.ones(3, dtype=torch.float64),
                                    ignore_index=-100, reduction="mean") is NotImplemented
    assert nf.cross_entropy_plain_cpu(x, t.int(), None, ignore_index=-100, reduction="mean",
                                         label_smoothing=0.0) is NotImplemented
    assert nf.multi_margin_loss(x[:0], t[:0], p=1, margin=1.0, weight=None,
                                             reduction="mean") is NotImplemented
    assert nf.multilabel_margin_loss(x, t.int(), reduction="mean") is NotImplemented


# Each: a call torch itself rejects (with a RuntimeError, or accepts where anyloss does
# not), and the error anyloss gives instead.
ERRORS = [
    ("nll_loss", lambda: (torch.zeros(3, 4), torch.zeros(2, dtype=torch.int64)), {},
     ValueError, r"^Expected input batch_size \(3\) to match target batch_size \(2\)\.$"),
    ("nll_loss", lambda: (torch.zeros(3, 4), torch.tensor([0, 4, 1])), {},
     IndexError, r"^Target 4 is out of bounds\.$"),
    ("nll_loss", lambda: (torch.zeros(3, 4), torch.zeros(3)), {},
     TypeError, "expected target dtype to be Long or Byte, but got Float"),
    ("cross_entropy", lambda: (torch.zeros(3, 4), torch.tensor([0, 1, 2])),
     {"label_smoothing": -0.1}, ValueError, "label_smoothing must be between 0.0 and 1.0"),
    ("cross_entropy", lambda: (torch.zeros(3, 4), torch.tensor([0, -1, 2])), {},
     IndexError, r"^Target -1 is out of bounds\.$"),
    ("cross_entropy", lambda: (torch.zeros(3, 4), torch.zeros(3, 4)), {"ignore_index": 1},
     ValueError, "ignore_index is not supported for floating point target"),
    ("multi_margin_loss", lambda: (torch.zeros(3, 4), torch.tensor([0, 1, 2])), {"p": 3},
     ValueError, r"^only p == 1 and p == 2 supported$"),
    ("multi_margin_loss", lambda: (torch.zeros(3, 4), torch.tensor([0, 1, 4])), {},
     ValueError, r"^target out of range$"),
    ("multilabel_margin_loss", lambda: (torch.zeros(3, 4), torch.zeros(3, 3, dtype=torch.int64)),
     {}, ValueError, r"^inconsistent target size: \[3, 3\] for input of size: \[3, 4\]$"),
    ("multilabel_margin_loss", lambda: (torch.zeros(1, 4), torch.tensor([[0, 4, -1, -1]])), {},
     ValueError, r"^argument #2 'target' is out of range$"),
]


@pytest.mark.parametrize(("loss", "make", "options", "error", "message"), ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_stay_anylosss_own(loss, make, options, error, message):
    with pytest.raises(error, match=message):
        getattr(anyloss, loss)(*make(), **options)


def test_torch_errors_for_bad_input_decline():
    """torch's own errors for bad arguments turn into a decline (then anyloss's checked
    path raises its error, as the test above shows): shape, index and value errors."""
    x = torch.zeros(3, 4)
    assert torch_backend.nll_loss(x, torch.zeros(2, dtype=torch.int64), None,
                                  ignore_index=-100, reduction="mean") is NotImplemented
    assert torch_backend.nll_loss(x, torch.tensor([0, 4, 1]), None, ignore_index=-100,
                                  reduction="mean") is NotImplemented
    assert torch_backend.multi_margin_loss(x, torch.tensor([0, 1, 2]), p=3, margin=1.0,
                                           weight=None, reduction="mean") is NotImplemented


def test_a_kernel_bug_is_not_hidden(monkeypatch):
    """Dispatch catches nothing: a kernel failing for its own reasons (a bug, an
    out-of-memory error) reaches the caller instead of a silent second evaluation."""
    def broken(*args, **kwargs):
        raise RuntimeError("a native kernel failing for its own reasons")

    monkeypatch.setattr(torch_backend, "nll_loss", broken)
    _registry._clear_caches()
    try:
        (x, target), _ = _plain_call("nll_loss")
        with pytest.raises(RuntimeError, match="failing for its own reasons"):
            anyloss.nll_loss(x, target)
    finally:
        _registry._clear_caches()


def test_out_of_memory_is_not_a_decline(monkeypatch):
    """The decline wrapper of torch's kernels lets allocation failures through."""
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 1024 bytes.")

    monkeypatch.setattr(F, "nll_loss", out_of_memory)
    (x, target), _ = _plain_call("nll_loss")
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        torch_backend.nll_loss(x, target, None, ignore_index=-100, reduction="mean")


# --- NumPy: compiled loops (numba) that check the class indices as they read them ----------

# The class losses' compiled loops (the elementwise kernels have their own tests).
NUMPY_LOSSES = sorted({k.function for k in _registry.records(library="numpy", stage="first")
                       if k.target.startswith("numpy.class_losses:")})
needs_numba = pytest.mark.skipif(not compiled.HAVE_NUMBA, reason="numba is not installed")


@pytest.fixture
def numpy_spy(monkeypatch):
    """Calls answered by the compiled NumPy loops, per loss."""
    yield from _count_answers(monkeypatch, "numpy", NUMPY_LOSSES)


def _numpy_call(loss, dtype, weighted, ignored):
    g = np.random.default_rng(1)
    n, c = 40, 7
    x = g.standard_normal((n, c)).astype(dtype)
    if loss == "nll_loss":
        target = g.integers(0, c, n)
        if ignored:
            target[::4] = 3  # the ignore_index below
        options = {"ignore_index": 3 if ignored else -100}
        if weighted:
            options["weight"] = g.uniform(0.2, 2.0, c).astype(dtype)
        return x - np.log(np.exp(x).sum(1, keepdims=True)), target, options
    if loss == "multi_margin_loss":
        options = {"p": 2, "margin": 0.7}
        if weighted:
            options["weight"] = g.uniform(0.2, 2.0, c).astype(dtype)
        return x, g.integers(0, c, n), options
    order = np.argsort(g.random((n, c)), axis=1)
    lengths = g.integers(0, c + 1, (n, 1))
    target = np.where(np.arange(c) < lengths, order, -1)
    target[::5, 1] = target[::5, 0]  # a class listed twice counts twice
    return x, target, {}


def _torch_value(loss, x, target, options, reduction):
    options = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
               for k, v in options.items()}
    return getattr(F, loss)(torch.from_numpy(x), torch.from_numpy(target),
                            reduction=reduction, **options).numpy()


#: (loss, weighted, with ignored targets): only nll_loss has ignore_index.
NUMPY_VARIANTS = [("nll_loss", False, False), ("nll_loss", True, True), ("nll_loss", False, True),
                  ("multilabel_margin_loss", False, False), ("multi_margin_loss", False, False),
                  ("multi_margin_loss", True, False)]


@needs_numba
@pytest.mark.parametrize(("loss", "weighted", "ignored"), NUMPY_VARIANTS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_loops_equal_torch_and_the_formula(numpy_spy, loss, reduction, dtype, weighted,
                                                 ignored):
    x, target, options = _numpy_call(loss, dtype, weighted, ignored)
    out = getattr(anyloss, loss)(x, target, reduction=reduction, **options)
    assert numpy_spy[loss] == 1
    with anyloss.fast_paths(enabled=False):
        generic = getattr(anyloss, loss)(x, target, reduction=reduction, **options)
    assert numpy_spy[loss] == 1
    expected = _torch_value(loss, x, target, options, reduction)
    assert np.ndim(out) == np.ndim(generic) and np.asarray(out).dtype == dtype
    tolerance = {"rtol": 1e-12, "atol": 1e-15} if dtype == np.float64 else {"rtol": 1e-5,
                                                                           "atol": 1e-6}
    np.testing.assert_allclose(out, expected, **tolerance)
    np.testing.assert_allclose(out, generic, **tolerance)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [1, 2])
def test_numpy_multi_margin_rows_do_not_depend_on_the_thread_count(numpy_spy, dtype, p):
    """The rows run in parallel, each row's sum on one thread: 1, 2 and 3 threads agree
    bit for bit, and with torch (a row of 300 classes, wider than a vector)."""
    g = np.random.default_rng(5)
    x = g.standard_normal((37, 300)).astype(dtype)
    target = g.integers(0, 300, 37)
    target[::7] = 299  # the last class: the skipped term at the loop's end
    runs = []
    for n in (1, 2, 3):
        with anyloss.threads(n):
            runs.append(anyloss.multi_margin_loss(x, target, p=p, margin=0.3,
                                                  reduction="none"))
    assert numpy_spy["multi_margin_loss"] == 3
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    expected = _torch_value("multi_margin_loss", x, target, {"p": p, "margin": 0.3}, "none")
    tolerance = {"rtol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5}
    np.testing.assert_allclose(runs[0], expected, **tolerance)


@needs_numba
@pytest.mark.parametrize("loss", NUMPY_LOSSES)
@pytest.mark.parametrize("variant", ["float16", "int32-target", "empty", "strided", "1-d"])
def test_numpy_declined_calls_take_the_checked_path(numpy_spy, loss, variant):
    x, target, options = _numpy_call(loss, np.float64, False, False)
    if variant == "float16":
        x = x.astype(np.float16)
    elif variant == "int32-target":
        target = target.astype(np.int32)
    elif variant == "empty":
        x, target = x[:0], target[:0]
    elif variant == "strided":
        x = np.asfortranarray(x)
    else:
        x, target = x[0], target[0]
    with anyloss.fast_paths(enabled=False):
        expected = getattr(anyloss, loss)(x, target, **options)
    out = getattr(anyloss, loss)(x, target, **options)
    assert numpy_spy[loss] == 0
    np.testing.assert_array_equal(out, expected)


@needs_numba
@pytest.mark.parametrize(("loss", "x", "target", "error", "message"), [
    ("nll_loss", np.zeros((3, 4)), np.array([0, 4, 1]), IndexError,
     r"^Target 4 is out of bounds\.$"),
    ("nll_loss", np.zeros((3, 4)), np.array([0, -1, 1]), IndexError,
     r"^Target -1 is out of bounds\.$"),
    ("multilabel_margin_loss", np.zeros((1, 4)), np.array([[0, -1, 7, 2]]), ValueError,
     r"^argument #2 'target' is out of range$"),
    ("multilabel_margin_loss", np.zeros((1, 4)), np.array([[0, -2, 1, 2]]), ValueError,
     r"^argument #2 'target' is out of range$"),
    ("multi_margin_loss", np.zeros((2, 4)), np.array([0, 4]), ValueError, r"^target out of range$"),
    ("multi_margin_loss", np.zeros((2, 4)), np.array([-1, 0]), ValueError,
     r"^target out of range$"),
])
def test_numpy_loops_leave_errors_to_anyloss(numpy_spy, loss, x, target, error, message):
    with pytest.raises(error, match=message):
        getattr(anyloss, loss)(x, target)
    assert numpy_spy[loss] == 0


# --- property: the kernel tried first and the checked path agree on any call -------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def class_loss_call(draw):
    """(loss, input, target, options): random (N, C) problems whose targets may hold values
    outside the classes (so that both paths must raise), float32 or float64."""
    loss = draw(st.sampled_from(LOSSES))
    n, c = draw(st.integers(0, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
    x = (3 * g.standard_normal((n, c))).astype(dtype)
    options: dict = {"reduction": draw(st.sampled_from(["none", "mean", "sum"]))}
    if loss == "multilabel_margin_loss":
        target = g.integers(-2 if draw(st.booleans()) else -1, c + (draw(st.booleans())), (n, c))
    else:
        low, high = (-2, c + 1) if draw(st.booleans()) else (0, c - 1)
        target = g.integers(low, high + 1, n)
        if draw(st.booleans()):
            options["weight"] = g.uniform(0.0, 2.0, c).astype(dtype)
    if loss in ("nll_loss", "cross_entropy"):
        options["ignore_index"] = draw(st.sampled_from([-100, -1, 0, c]))
    if loss == "cross_entropy":
        options["label_smoothing"] = draw(st.sampled_from([0.0, 0.2]))
    if loss == "multi_margin_loss":
        options["p"] = draw(st.sampled_from([1, 2]))
        options["margin"] = draw(st.sampled_from([1.0, 0.5, -0.5]))
    return loss, x, target, options


def _outcome(func, *args, **options):
    """The value of a call, or the type and message of the error it raises."""
    try:
        return "value", func(*args, **options)
    except (ValueError, TypeError, IndexError) as exc:
        return "error", (type(exc), str(exc))


@pytest.mark.parametrize("library", ["numpy", "torch"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=class_loss_call())
def test_kernel_tried_first_and_checked_path_agree(library, call):
    loss, x, target, options = call
    if library == "torch":
        x, target = torch.from_numpy(x), torch.from_numpy(target)
        options = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                   for k, v in options.items()}
    func = getattr(anyloss, loss)
    fast = _outcome(func, x, target, **options)
    with anyloss.fast_paths(enabled=False):
        checked = _outcome(func, x, target, **options)
    assert fast[0] == checked[0], (fast, checked)
    if fast[0] == "error":
        assert fast[1] == checked[1]
        return
    to_numpy = (lambda a: a.detach().numpy()) if library == "torch" else np.asarray
    got, expected = to_numpy(fast[1]), to_numpy(checked[1])
    assert got.shape == expected.shape and got.dtype == expected.dtype
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if got.dtype == np.float64 else {"rtol": 2e-5,
                                                                             "atol": 1e-5}
    np.testing.assert_allclose(got, expected, equal_nan=True, **tolerance)
