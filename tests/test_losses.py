"""The torch.nn-style classes against torch.nn's, built with the same arguments."""

from __future__ import annotations

import inspect
import pickle
import warnings

import numpy as np
import pytest
from helpers import FLOAT64, assert_close, call_quietly

import anyloss
from anyloss.conformance import catalogue

torch = pytest.importorskip("torch")

#: Function name to class name, from the classes' own declarations.
CLASS_OF = {cls.function: cls for cls in map(lambda n: getattr(anyloss, n), anyloss.classes.__all__)
            if cls is not anyloss.NLLLoss2d}


def test_every_torch_loss_class_exists_with_torchs_constructor():
    """Same names, parameters, positional order and defaults as torch.nn."""
    for name in anyloss.classes.__all__:
        ours = inspect.signature(getattr(anyloss, name))
        theirs = inspect.signature(getattr(torch.nn, name).__init__)
        theirs = [(p.name, p.kind, p.default) for p in theirs.parameters.values() if p.name != "self"]
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == theirs, name
    assert len(anyloss.classes.__all__) == 23  # 22 classes (linear cross entropy) and NLLLoss2d


def _split(case, cls):
    """Constructor and forward arguments of ``cls`` for ``case``, or None if it cannot express it."""
    params = inspect.signature(cls).parameters
    ctor, forward = {}, {}
    for name, value in {**case.arrays, **case.options}.items():
        if name in params:
            ctor[name] = value
        elif name in cls.inputs:
            forward[name] = value
        else:
            return None
    if set(forward) != set(cls.inputs):
        return None
    return ctor, [forward[name] for name in cls.inputs]


def _class_cases():
    for case in catalogue.cases():
        cls = CLASS_OF.get(case.loss)
        if cls is not None and _split(case, cls) is not None:
            yield case


def _as(convert, value):
    return convert(value) if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("case", list(_class_cases()), ids=lambda c: c.id)
def test_class_matches_torch_class(backend, case):
    cls = CLASS_OF[case.loss]
    ctor, forward = _split(case, cls)
    ours = call_quietly(cls, **{k: _as(backend.from_numpy, v) for k, v in ctor.items()})
    theirs = call_quietly(getattr(torch.nn, cls.__name__),
                          **{k: _as(torch.from_numpy, v) for k, v in ctor.items()})
    actual = call_quietly(ours, *(_as(backend.from_numpy, a) for a in forward))
    expected = call_quietly(theirs, *(_as(torch.from_numpy, a) for a in forward))
    assert_close(backend.to_numpy(actual), expected.detach().numpy(), **FLOAT64)


def test_class_is_thin_and_stores_weight_as_given():
    weight = torch.ones(3, dtype=torch.float64)
    loss = anyloss.CrossEntropyLoss(weight, ignore_index=2, label_smoothing=0.1)
    assert loss.weight is weight
    assert (loss.ignore_index, loss.label_smoothing, loss.reduction) == (2, 0.1, "mean")
    assert callable(loss) and loss.forward.__func__ is anyloss.classes.Loss.forward


def test_repr_shows_options_that_differ_from_defaults():
    assert repr(anyloss.L1Loss()) == "L1Loss()"
    assert repr(anyloss.HuberLoss(delta=2.0)) == "HuberLoss(delta=2.0)"
    assert repr(anyloss.MultiMarginLoss(2, weight=np.ones(3))) == (
        "MultiMarginLoss(p=2, weight=<numpy array shape=(3,) dtype=float64>)"
    )


def test_pickle_round_trip():
    loss = anyloss.BCEWithLogitsLoss(pos_weight=np.asarray([2.0, 0.5]), reduction="sum")
    clone = pickle.loads(pickle.dumps(loss))
    assert repr(clone) == repr(loss)
    x, y = np.asarray([[0.3, -1.2]]), np.asarray([[1.0, 0.0]])
    assert float(clone(x, y)) == float(loss(x, y))


def test_legacy_arguments_resolve_at_construction_with_a_warning():
    with pytest.warns(UserWarning, match="please use reduction='sum' instead"):
        loss = anyloss.MSELoss(size_average=False)
    assert loss.reduction == "sum"
    with pytest.warns(UserWarning, match="please use reduction='none' instead"):
        assert anyloss.SoftMarginLoss(reduce=False).reduction == "none"


def test_nll_loss_2d_is_a_deprecated_alias():
    with pytest.warns(UserWarning, match="NLLLoss2d has been deprecated"):
        loss = anyloss.NLLLoss2d(ignore_index=1)
    assert isinstance(loss, anyloss.NLLLoss) and loss.ignore_index == 1


def test_forward_checks_the_number_of_arrays():
    with pytest.raises(TypeError, match=r"MarginRankingLoss.forward\(\) takes 3 arrays"):
        anyloss.MarginRankingLoss()(np.ones(2), np.ones(2))


def test_triplet_with_distance_takes_a_custom_callable():
    g = np.random.default_rng(3)
    a, p, n = (g.standard_normal((4, 5)) for _ in range(3))
    l1 = lambda x, y: anyloss.l1_loss(x, y, reduction="none").sum(axis=-1)  # noqa: E731
    loss = anyloss.TripletMarginWithDistanceLoss(distance_function=l1, margin=0.5)
    t = [torch.from_numpy(v) for v in (a, p, n)]
    expected = torch.nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: (x - y).abs().sum(-1), margin=0.5)(*t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(loss(a, p, n), expected.numpy(), **FLOAT64)
