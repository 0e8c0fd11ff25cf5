"""Native twins tried before anyloss's checks (``anyloss._dispatch.NATIVE_FIRST``).

On plain CPU torch calls, ``nll_loss``, ``cross_entropy`` and the two margin losses
over classes hand the public arguments to ``torch.nn.functional`` first. These tests
check the contract: the twin runs where it should (a spy counts the calls), it is
declined where its result would not be anyloss's, and every error is still anyloss's
own (type and wording), since a failing native call falls back to the checked path.
"""

from __future__ import annotations

import numpy as np
import pytest

import anyloss
from anyloss import _dispatch
from anyloss.backends import torch as torch_backend

torch = pytest.importorskip("torch")
F = torch.nn.functional

LOSSES = sorted(_dispatch.NATIVE_FIRST)


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


@pytest.fixture
def spy(monkeypatch):
    """Counts, per loss, the calls its native twin answered (did not decline)."""
    calls = {name: 0 for name in LOSSES}
    for name in LOSSES:
        original = getattr(torch_backend, f"{name}_native_first")

        def counting(*args, _name=name, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            calls[_name] += out is not NotImplemented
            return out

        monkeypatch.setattr(torch_backend, f"{name}_native_first", counting)
    _dispatch._backend_function.cache_clear()
    yield calls
    _dispatch._backend_function.cache_clear()


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
    assert nf.nll_loss_native_first(x.half(), t, None, ignore_index=-100,
                                    reduction="mean") is NotImplemented
    assert nf.nll_loss_native_first(x, t, torch.ones(3, dtype=torch.float64),
                                    ignore_index=-100, reduction="mean") is NotImplemented
    assert nf.cross_entropy_native_first(x, t.int(), None, ignore_index=-100, reduction="mean",
                                         label_smoothing=0.0) is NotImplemented
    assert nf.multi_margin_loss_native_first(x[:0], t[:0], p=1, margin=1.0, weight=None,
                                             reduction="mean") is NotImplemented
    assert nf.multilabel_margin_loss_native_first(x, t.int(), reduction="mean") is NotImplemented


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


def test_a_twin_raising_falls_back_quietly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a native kernel failing for its own reasons")

    monkeypatch.setattr(torch_backend, "nll_loss_native_first", broken)
    _dispatch._backend_function.cache_clear()
    try:
        (x, target), _ = _plain_call("nll_loss")
        out = anyloss.nll_loss(x, target)
        torch.testing.assert_close(out, F.nll_loss(x, target), rtol=1e-12, atol=0)
    finally:
        _dispatch._backend_function.cache_clear()
