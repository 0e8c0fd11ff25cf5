"""Bad input to the class-margin and embedding losses, and the triplet loss with a custom distance.

Each bad call is checked twice: torch refuses it with the message written
here, and anyloss raises the listed exception type with exactly that message
(a ValueError wherever torch raises a RuntimeError).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import FLOAT64, assert_close, call_quietly

import anyloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

_g = np.random.default_rng(7)
X = _g.standard_normal((3, 4))
Y = _g.standard_normal((3, 4))
Z = _g.standard_normal((3, 4))
CLASSES = np.asarray([0, 3, 1])
TRIPLET_DIMS = (
    "The anchor, positive, and negative tensors are expected to have the same number of "
    "dimensions, but got: anchor 2D, positive 2D, and negative 1D inputs"
)
MULTI_MARGIN_TARGET = (
    "multi_margin_loss: target tensor should be 1-D with size equal to the number of input "
    "samples (batch size). Expected target size [3], but got [2]. Input has shape [3, 4]."
)

#: (id, loss, positional arrays, options, anyloss's exception type, torch's message)
BAD_INPUT = [
    ("multi_margin-p3", "multi_margin_loss", (X, CLASSES), {"p": 3}, ValueError,
     "only p == 1 and p == 2 supported"),
    ("multi_margin-p0", "multi_margin_loss", (X, CLASSES), {"p": 0}, ValueError,
     "only p == 1 and p == 2 supported"),
    ("multi_margin-weight-2d", "multi_margin_loss", (X, CLASSES), {"weight": np.ones((2, 2))},
     ValueError, "weight must be one-dimensional"),
    ("multi_margin-weight-0d", "multi_margin_loss", (X, CLASSES), {"weight": np.asarray(1.0)},
     ValueError, "weight must be one-dimensional"),
    ("multi_margin-weight-size", "multi_margin_loss", (X, CLASSES), {"weight": np.ones(5)},
     ValueError, "inconsistent weight size, expected 4 but got [5]"),
    ("multi_margin-target-size", "multi_margin_loss", (X, CLASSES[:2]), {}, ValueError,
     MULTI_MARGIN_TARGET),
    ("multi_margin-3d-input", "multi_margin_loss", (np.ones((2, 3, 4)), np.zeros(2, np.int64)),
     {}, ValueError,
     "Expected non-empty vector or matrix with optional 0-dim batch size, but got: [2, 3, 4]"),
    ("multi_margin-no-classes", "multi_margin_loss", (np.ones((2, 0)), np.zeros(2, np.int64)),
     {}, ValueError,
     "Expected non-empty vector or matrix with optional 0-dim batch size, but got: [2, 0]"),
    ("multi_margin-class-too-big", "multi_margin_loss", (X, np.asarray([0, 4, 1])), {},
     ValueError, "target out of range"),
    ("multi_margin-class-negative", "multi_margin_loss", (X, np.asarray([0, -1, 1])), {},
     ValueError, "target out of range"),
    ("multilabel_margin-size", "multilabel_margin_loss", (X, np.zeros((2, 4), np.int64)), {},
     ValueError, "inconsistent target size: [2, 4] for input of size: [3, 4]"),
    ("multilabel_margin-1d-size", "multilabel_margin_loss", (X[0], np.zeros(2, np.int64)), {},
     ValueError, "inconsistent target size: [2] for input of size: [4]"),
    ("multilabel_margin-too-big", "multilabel_margin_loss",
     (X, np.asarray([[0, -1, 0, 0], [1, 4, -1, 0], [-1, 0, 0, 0]])), {}, ValueError,
     "argument #2 'target' is out of range"),
    ("multilabel_margin-below-minus-1", "multilabel_margin_loss",
     (X, np.asarray([[0, -1, 0, 0], [1, -2, -1, 0], [-1, 0, 0, 0]])), {}, ValueError,
     "argument #2 'target' is out of range"),
    ("multilabel_soft_margin-reduction", "multilabel_soft_margin_loss", (X, Y),
     {"reduction": "bad"}, ValueError, "bad is not valid"),
    ("multilabel_soft_margin-0d", "multilabel_soft_margin_loss",
     (np.asarray(1.0), np.asarray(1.0)), {}, IndexError,
     "Dimension specified as -1 but tensor has no dimensions"),
    ("margin_ranking-dims", "margin_ranking_loss", (X, Y[0], np.ones((3, 4))), {}, ValueError,
     "margin_ranking_loss : All input tensors should have same dimension but got sizes: "),
    ("margin_ranking-target-dims", "margin_ranking_loss", (X, Y, np.ones(3)), {}, ValueError,
     "margin_ranking_loss : All input tensors should have same dimension but got sizes: "),
    ("triplet-dims", "triplet_margin_loss", (X, Y, Z[0]), {}, ValueError, TRIPLET_DIMS),
    ("triplet-margin-0", "triplet_margin_loss", (X, Y, Z), {"margin": 0.0}, ValueError,
     "margin must be greater than 0, got 0.0"),
    ("triplet-margin-negative", "triplet_margin_loss", (X, Y, Z), {"margin": -1}, ValueError,
     "margin must be greater than 0, got -1"),
    ("triplet-distance-dims", "triplet_margin_with_distance_loss", (X, Y, Z[0]), {}, ValueError,
     TRIPLET_DIMS),
    ("triplet-distance-margin-0", "triplet_margin_with_distance_loss", (X, Y, Z),
     {"margin": 0}, ValueError, "margin must be greater than 0, got 0"),
    ("triplet-distance-reduction", "triplet_margin_with_distance_loss", (X, Y, Z),
     {"reduction": "bad"}, ValueError, "bad is not a valid value for reduction"),
    ("cosine-2d-target", "cosine_embedding_loss", (X, Y, np.ones((3, 1))), {}, ValueError,
     "0D or 1D target tensor expected, multi-target not supported"),
    ("cosine-1d-target-1d-inputs", "cosine_embedding_loss", (X[0], Y[0], np.ones(4)), {},
     ValueError, "1D target tensor expects 2D input tensors, but found inputs with sizes "
     "[4] and [4]."),
    ("cosine-0d-target-2d-inputs", "cosine_embedding_loss", (X, Y, np.asarray(1.0)), {},
     ValueError, "0D target tensor expects 1D input tensors, but found inputs with sizes "
     "[3, 4] and [3, 4]."),
    ("cosine-mixed-dims", "cosine_embedding_loss", (X, Y[0], np.ones(3)), {}, ValueError,
     "1D target tensor expects 2D input tensors, but found inputs with sizes [3, 4] and [4]."),
    ("pairwise-inf-empty", "pairwise_distance", (np.ones((3, 0)), np.ones((3, 0))),
     {"p": float("inf")}, ValueError,
     "linalg.vector_norm cannot compute the inf norm on the dimension 1because this dimension "
     "is empty and the operation does not have an identity"),
]


def _torch(value):
    return torch.tensor(value) if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("loss, arrays, options, error, message", [b[1:] for b in BAD_INPUT],
                         ids=[b[0] for b in BAD_INPUT])
def test_torch_refuses_with_this_message(loss, arrays, options, error, message):
    """The messages below are torch's own (torch names sizes ``torch.Size``, we do not)."""
    with pytest.raises(Exception) as caught:
        call_quietly(getattr(F, loss), *map(_torch, arrays),
                     **{k: _torch(v) for k, v in options.items()})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("loss, arrays, options, error, message", [b[1:] for b in BAD_INPUT],
                         ids=[b[0] for b in BAD_INPUT])
def test_bad_input_raises(backend, loss, arrays, options, error, message):
    if backend.name == "dask" and "out of range" in message:
        pytest.skip("value checks are skipped on lazy arrays")
    arrays = tuple(backend.from_numpy(a) for a in arrays)
    options = {k: backend.from_numpy(v) if isinstance(v, np.ndarray) else v
               for k, v in options.items()}
    # The whole message, except where torch's ends with sizes it writes as torch.Size.
    pattern = "^" + re.escape(message) + ("" if message.endswith(": ") else "$")
    with pytest.raises(error, match=pattern):
        call_quietly(getattr(anyloss, loss), *arrays, **options)


def test_margin_ranking_names_the_sizes():
    with pytest.raises(ValueError, match=re.escape("input1: (3, 4), input2: (4,), target: (3, 4)")):
        anyloss.margin_ranking_loss(X, Y[0], np.ones((3, 4)))


def test_class_range_is_not_checked_under_jit():
    """Traced values cannot be inspected: out-of-range classes raise only on eager arrays."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    bad = jnp.asarray([0, 4, 1])
    with pytest.raises(ValueError, match="target out of range"):
        anyloss.multi_margin_loss(jnp.asarray(X), bad)
    jax.jit(anyloss.multi_margin_loss)(jnp.asarray(X), bad)  # no error, no host sync


def test_class_range_is_not_checked_on_dask():
    da = pytest.importorskip("dask.array")
    lazy = anyloss.multi_margin_loss(da.from_array(X), da.from_array(np.asarray([0, 4, 1])))
    assert hasattr(lazy, "dask")


@pytest.mark.parametrize("loss", ["multi_margin_loss", "multilabel_margin_loss"])
def test_float_class_indices_are_a_type_error(loss):
    target = CLASSES.astype(np.float64) if loss == "multi_margin_loss" else np.zeros((3, 4))
    with pytest.raises(TypeError, match=rf"{loss}\(\): expected an integer target"):
        getattr(anyloss, loss)(X, target)


# --- triplet loss with a distance of one's own --------------------------------------


def _l1(xp):
    return lambda u, v: xp.sum(xp.abs(u - v), axis=-1)


def _cosine_distance(xp):
    def distance(u, v):
        dot = xp.sum(u * v, axis=-1)
        return 1.0 - dot / xp.sqrt(xp.sum(u * u, axis=-1) * xp.sum(v * v, axis=-1))

    return distance


@pytest.mark.parametrize("make_distance", [_l1, _cosine_distance], ids=["l1", "cosine"])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_triplet_with_a_callable_distance(backend, make_distance, swap, reduction):
    g = np.random.default_rng(11)
    arrays = [g.standard_normal((5, 3)) for _ in range(3)]
    expected = F.triplet_margin_with_distance_loss(
        *map(torch.tensor, arrays), distance_function=make_distance(torch), margin=0.8,
        swap=swap, reduction=reduction)
    result = anyloss.triplet_margin_with_distance_loss(
        *map(backend.from_numpy, arrays), distance_function=make_distance(backend.xp),
        margin=0.8, swap=swap, reduction=reduction)
    assert_close(backend.to_numpy(result), expected.numpy(), **FLOAT64)


def test_triplet_default_distance_is_pairwise_distance():
    g = np.random.default_rng(12)
    a, p, n = (g.standard_normal((4, 3)) for _ in range(3))
    default = anyloss.triplet_margin_with_distance_loss(a, p, n, reduction="none")
    explicit = anyloss.triplet_margin_with_distance_loss(
        a, p, n, distance_function=anyloss.pairwise_distance, reduction="none")
    assert_close(default, explicit, rtol=0, atol=0)


def test_triplet_with_distance_is_keyword_only():
    with pytest.raises(TypeError):
        anyloss.triplet_margin_with_distance_loss(X, Y, Z, anyloss.pairwise_distance)


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8])
def test_class_indices_of_any_integer_dtype(backend, dtype):
    """torch takes int64 class indices only; anyloss takes any integer dtype."""
    classes = backend.from_numpy(CLASSES.astype(dtype))
    multi = anyloss.multi_margin_loss(backend.from_numpy(X), classes, reduction="none")
    expected = F.multi_margin_loss(torch.tensor(X), torch.tensor(CLASSES), reduction="none")
    assert_close(backend.to_numpy(multi), expected.numpy(), **FLOAT64)
    listed = np.asarray([[3, 0, -1, 1], [1, 1, 2, -1], [2, 0, 1, 3]])
    if dtype == np.uint8:
        listed = np.where(listed < 0, 0, listed)  # no -1 in an unsigned dtype
    multilabel = anyloss.multilabel_margin_loss(backend.from_numpy(X),
                                                backend.from_numpy(listed.astype(dtype)),
                                                reduction="none")
    expected = F.multilabel_margin_loss(torch.tensor(X), torch.tensor(listed), reduction="none")
    assert_close(backend.to_numpy(multilabel), expected.numpy(), **FLOAT64)
