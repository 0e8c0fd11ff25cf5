"""Every loss traces as one graph under ``torch.compile(fullgraph=True)``.

The whole conformance catalogue is compiled on CPU torch tensors and compared with eager
anyloss, values and autograd gradients, with ``dynamic=False`` and ``dynamic=True``. A
graph break is an error under ``fullgraph=True``; a second call with the same shapes must
not compile again.

The cost is kept down in three ways. The catalogue runs on the ``aot_eager`` backend:
dynamo's graph capture plus AOTAutograd's forward and backward graphs on fake tensors,
which is where graph breaks, fake implementations and functionalisation fail, without
Inductor's code generation (a few losses run through Inductor itself, the default
backend). Compiled functions are cached per (function, options, dynamic). And by default
the test takes one case per option set of each loss, every option set with
``dynamic=False`` and one per loss with ``dynamic=True``; ``ANYLOSS_COMPILE_ALL=1`` runs
every case of the catalogue in both modes (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from helpers import FLOAT64, assert_close

import anyloss
from anyloss.conformance import catalogue

torch = pytest.importorskip("torch")
dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402


def _one_case_per_option_set(cases):
    """The first case of each (loss, options): every option set, a subset of the shapes."""
    chosen = {}
    for case in cases:
        chosen.setdefault((case.loss, _options_key(case.options)), case)
    return list(chosen.values())


def _options_key(options: dict) -> str:
    return repr(sorted(options.items(), key=lambda kv: kv[0]))


_ALL = os.environ.get("ANYLOSS_COMPILE_ALL") == "1"
_CATALOGUE = list(catalogue.cases())
STATIC_CASES = _CATALOGUE if _ALL else _one_case_per_option_set(_CATALOGUE)
DYNAMIC_CASES = (_CATALOGUE if _ALL
                 else list({c.loss: c for c in reversed(STATIC_CASES)}.values()))


@pytest.fixture(autouse=True)
def _no_silent_fallback():
    """Recompilations beyond dynamo's limit would fall back to eager without a word: raise."""
    with dynamo.config.patch(recompile_limit=100_000, accumulated_recompile_limit=100_000,
                             fail_on_recompile_limit_hit=True):
        yield


_COMPILED: dict[tuple, tuple] = {}


def _compiled(func, options: dict, dynamic: bool, backend: str = "aot_eager",
              positional: bool = False):
    """``func(**arrays, **options)`` (``func(*arrays, **options)`` if ``positional``)
    compiled whole, and the counter of its compilations; one per (function, options,
    dynamic, backend)."""
    key = (func.__qualname__, _options_key(options), dynamic, backend, positional)
    if key not in _COMPILED:
        counter = CompileCounterWithBackend(backend)

        if positional:
            def objective(*arrays):
                return func(*arrays, **options)
        else:
            def objective(**arrays):
                return func(**arrays, **options)

        _COMPILED[key] = (torch.compile(objective, backend=counter, fullgraph=True,
                                        dynamic=dynamic), counter)
    return _COMPILED[key]


def _cotangent(shape) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 1.5, shape)


def _run(func, case: catalogue.Case, dtype=None):
    """``func``'s result and the gradients of a weighted sum of it wrt the case's
    differentiable arrays (``None`` where the output takes no gradient)."""
    arrays = case.arrays if dtype is None else case.arrays_as(dtype)
    tensors = {k: torch.tensor(a, requires_grad=k in case.differentiable)
               for k, a in arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = func(**tensors)
    grads = {}
    if case.differentiable and out.requires_grad:
        weights = torch.tensor(_cotangent(tuple(out.shape)), dtype=out.dtype)
        (out * weights).sum().backward()
        grads = {k: tensors[k].grad.numpy() for k in case.differentiable}
    return out.detach().numpy(), grads


def _check_against_eager(func, options, case, dynamic, backend="aot_eager", dtype=None,
                         **tolerance):
    compiled, counter = _compiled(func, options, dynamic, backend)
    expected, expected_grads = _run(lambda **t: func(**t, **options), case, dtype)
    out, grads = _run(compiled, case, dtype)
    assert counter.frame_count >= 1, "nothing was compiled"
    frames = counter.frame_count
    assert_close(out, expected, **tolerance)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert_close(grad, expected_grads[name], **tolerance)
    _run(compiled, case, dtype)  # the same shapes again: no new compilation
    assert counter.frame_count == frames, "recompiled for the same shapes"


RUNS = [pytest.param(case, False, id=case.id + "-static") for case in STATIC_CASES]
RUNS += [pytest.param(case, True, id=case.id + "-dynamic") for case in DYNAMIC_CASES]


@pytest.mark.parametrize(("case", "dynamic"), RUNS)
def test_catalogue_compiles_whole(case, dynamic):
    _check_against_eager(getattr(anyloss, case.loss), case.options, case, dynamic,
                         **FLOAT64)


def test_every_loss_is_in_the_compiled_runs():
    """The subset leaves no loss, and no option set, out."""
    every = {(c.loss, _options_key(c.options)) for c in _CATALOGUE}
    assert {(c.loss, _options_key(c.options)) for c in STATIC_CASES} == every
    assert {c.loss for c in DYNAMIC_CASES} == {c.loss for c in _CATALOGUE}


INDUCTOR_LOSSES = ("mse_loss", "cross_entropy", "binary_cross_entropy_with_logits", "ctc_loss")


@pytest.mark.parametrize("loss", INDUCTOR_LOSSES)
def test_inductor_compiles_whole(loss):
    """The default backend, code generation included, in float32."""
    case = next(c for c in _CATALOGUE if c.loss == loss and "float32" in c.dtypes)
    _check_against_eager(getattr(anyloss, loss), case.options, case, False,
                         backend="inductor", dtype=np.float32, rtol=1e-5, atol=1e-6)


def _and_grad_problems():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 7))
    classes = rng.integers(0, 7, 16)
    hidden, weight = rng.normal(size=(16, 5)), rng.normal(size=(7, 5))
    log_probs = rng.normal(size=(12, 3, 5))
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    labels = rng.integers(1, 5, (3, 4))
    return {
        "cross_entropy_and_grad": ((logits, classes), {"label_smoothing": 0.1}),
        "linear_cross_entropy_and_grad": ((hidden, weight, classes), {}),
        "ctc_loss_and_grad": ((log_probs, labels, np.full(3, 12), np.array([4, 3, 2])), {}),
    }


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("name", list(_and_grad_problems()))
def test_and_grad_functions_compile_whole(name, dynamic):
    """The gradient functions for libraries without autodiff trace whole too: their torch
    kernels (torch.autograd.grad inside) step aside for anyloss's closed forms."""
    arrays, options = _and_grad_problems()[name]
    func = getattr(anyloss, name)
    compiled, counter = _compiled(func, options, dynamic, positional=True)
    tensors = [torch.tensor(a) for a in arrays]
    expected = func(*tensors, **options)
    got = compiled(*tensors)
    frames = counter.frame_count
    assert frames >= 1
    for a, b in zip(got, expected, strict=True):
        if b is None:
            assert a is None
        else:
            assert_close(a.numpy(), b.numpy(), **FLOAT64)
    compiled(*tensors)
    assert counter.frame_count == frames, "recompiled for the same shapes"


def _class_cases():
    """Each class with the first catalogue case of its function (options to the
    constructor, arrays to the call)."""
    for name in anyloss.classes.__all__:
        cls = getattr(anyloss, name)
        function = getattr(cls, "function", None)
        if function is None or name in ("NLLLoss2d", "LinearCrossEntropyLoss"):
            continue  # NLLLoss2d is NLLLoss; LinearCrossEntropyLoss: the test below
        case = next(c for c in _CATALOGUE if c.loss == function)
        yield pytest.param(cls, case, id=name)


@pytest.mark.parametrize(("cls", "case"), list(_class_cases()))
def test_classes_compile_whole(cls, case):
    module = cls(**case.options)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    tensors = [torch.tensor(a) for a in case.arrays.values()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert_close(compiled(*tensors).numpy(), module(*tensors).numpy(), **FLOAT64)


def test_linear_cross_entropy_class_compiles_once_its_layer_exists():
    """The class creates its layer on the first call (NumPy's generator, which dynamo does
    not trace): after one eager call, the held layer's loss traces whole."""
    module = anyloss.LinearCrossEntropyLoss(5, 7, bias=True)
    hidden = torch.tensor(np.random.default_rng(2).normal(size=(6, 5)))
    classes = torch.tensor([0, 3, 6, 2, 2, 1])
    expected = module(hidden, classes)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    assert_close(compiled(hidden, classes).numpy(), expected.numpy(), **FLOAT64)


def test_a_fast_paths_block_is_honoured_and_traced():
    """The switch is read while tracing (a thread-local attribute, guarded): a graph compiled
    inside ``fast_paths(False)`` runs the written-once formula, and leaving the block
    compiles again rather than reusing it."""
    x = torch.linspace(-3, 3, 12, dtype=torch.float64)
    y = torch.linspace(-1, 2, 12, dtype=torch.float64)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda a, b: anyloss.huber_loss(a, b, delta=0.5),
                             backend=counter, fullgraph=True)
    with anyloss.fast_paths(False):
        generic = compiled(x, y)
    assert counter.frame_count == 1
    fast = compiled(x, y)
    assert counter.frame_count == 2
    expected = torch.nn.functional.huber_loss(x, y, delta=0.5)
    assert_close(generic.numpy(), expected.numpy(), **FLOAT64)
    assert_close(fast.numpy(), expected.numpy(), **FLOAT64)


def test_warnings_are_given_when_a_call_is_compiled():
    """torch's broadcasting UserWarning, given while tracing (warnings.warn is not
    traceable); the graph stays whole."""
    compiled = torch.compile(anyloss.l1_loss, fullgraph=True, backend="aot_eager")
    with pytest.warns(UserWarning, match="Using a target size"):
        compiled(torch.ones(3, 4), torch.ones(4))
