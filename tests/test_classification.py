"""Bad input and edge cases of nll_loss, cross_entropy and the binary cross entropies.

Each bad call is checked on every backend for the exception type and message,
and once against torch itself, so that a change of torch's wording shows up.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from helpers import FLOAT64, assert_close, call_quietly

import anyloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

G = np.random.default_rng(7)
LOGITS = G.standard_normal((3, 4))
PROBS = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
TARGET = np.asarray([0, 3, 1])
UNIT = G.uniform(0.1, 0.9, (3, 4))


def _i(*values):
    return np.asarray(values, dtype=np.int64)


#: (id, loss, positional arrays, keyword options, exception, message, torch words it alike).
#: torch raises RuntimeError where anyloss raises ValueError; ``same`` is False where the
#: message differs from torch's by more than that (shapes printed as tuples, a check torch
#: does not make).
BAD_CALLS = [
    # Class index out of range, or negative and not ignore_index (eager arrays only).
    ("nll-out-of-range", "nll_loss", (LOGITS, _i(0, 5, 1)), {}, IndexError,
     "Target 5 is out of bounds.", True),
    ("nll-negative", "nll_loss", (LOGITS, _i(0, -1, 1)), {}, IndexError,
     "Target -1 is out of bounds.", True),
    ("nll-negative-other-ignore", "nll_loss", (LOGITS, _i(0, -1, 1)), {"ignore_index": 255},
     IndexError, "Target -1 is out of bounds.", True),
    ("nll-none-out-of-range", "nll_loss", (LOGITS, _i(0, 4, 1)), {"reduction": "none"},
     IndexError, "Target 4 is out of bounds.", True),
    ("nll-kdim-out-of-range", "nll_loss", (G.standard_normal((2, 4, 3)), _i([0, 1, 9], [0, 0, 0])),
     {}, IndexError, "Target 9 is out of bounds.", True),
    ("nll-unbatched-out-of-range", "nll_loss", (LOGITS[0], np.asarray(7)), {}, IndexError,
     "Target 7 is out of bounds.", True),
    ("ce-out-of-range", "cross_entropy", (LOGITS, _i(0, 5, 1)), {}, IndexError,
     "Target 5 is out of bounds.", True),
    ("ce-smoothing-out-of-range", "cross_entropy", (LOGITS, _i(0, 5, 1)),
     {"label_smoothing": 0.1, "weight": np.ones(4)}, IndexError,
     "Target 5 is out of bounds.", True),
    # Weight of the wrong size.
    ("nll-weight-size", "nll_loss", (LOGITS, TARGET), {"weight": np.ones(3)}, ValueError,
     "weight tensor should be defined either for all 4 classes or no classes but got "
     "weight tensor of shape: [3]", True),
    ("nll-weight-2d", "nll_loss", (LOGITS, TARGET), {"weight": np.ones((1, 4))}, ValueError,
     "weight tensor should be defined either for all 4 classes or no classes but got "
     "weight tensor of shape: [1, 4]", True),
    ("nll-kdim-weight-size", "nll_loss", (G.standard_normal((2, 4, 3)), np.zeros((2, 3), int)),
     {"weight": np.ones(3)}, ValueError,
     "weight tensor should be defined either for all or no classes", True),
    ("ce-weight-size", "cross_entropy", (LOGITS, TARGET), {"weight": np.ones(5)}, ValueError,
     "weight tensor should be defined either for all 4 classes or no classes but got "
     "weight tensor of shape: [5]", True),
    ("ce-probabilities-weight-size", "cross_entropy", (LOGITS, PROBS), {"weight": np.ones(3)},
     ValueError, "cross_entropy: weight tensor should be defined either for all 4 classes or "
     "no classes but got weight tensor of shape: [3]", True),
    # label_smoothing outside [0, 1]; torch silently ignores a negative value.
    ("ce-smoothing-above-1", "cross_entropy", (LOGITS, TARGET), {"label_smoothing": 1.5},
     ValueError, "label_smoothing must be between 0.0 and 1.0. Got: 1.5", True),
    ("ce-smoothing-probabilities", "cross_entropy", (LOGITS, PROBS), {"label_smoothing": 2},
     ValueError, "label_smoothing must be between 0.0 and 1.0. Got: 2", True),
    ("ce-smoothing-negative", "cross_entropy", (LOGITS, TARGET), {"label_smoothing": -0.1},
     ValueError, "label_smoothing must be between 0.0 and 1.0. Got: -0.1", False),
    # Batch sizes that differ.
    ("nll-batch", "nll_loss", (LOGITS, _i(0, 1)), {}, ValueError,
     "Expected input batch_size (3) to match target batch_size (2).", True),
    ("ce-batch", "cross_entropy", (LOGITS, _i(0, 1)), {}, ValueError,
     "Expected input batch_size (3) to match target batch_size (2).", True),
    ("nll-kdim-batch", "nll_loss", (G.standard_normal((2, 4, 3)), np.zeros((3, 3), int)), {},
     ValueError, "Expected input batch_size (2) to match target batch_size (3).", True),
    # A multi-dimensional target where a 1-d one is expected, and other shape errors.
    ("nll-multi-target", "nll_loss", (LOGITS, np.zeros((3, 2), int)), {}, ValueError,
     "0D or 1D target tensor expected, multi-target not supported", True),
    ("ce-multi-target", "cross_entropy", (LOGITS, np.zeros((3, 2), int)), {}, ValueError,
     "0D or 1D target tensor expected, multi-target not supported", True),
    ("ce-float-multi-target", "cross_entropy", (LOGITS, np.zeros((3, 5))), {}, TypeError,
     "expected target dtype to be Long or Byte, but got Double", False),
    ("nll-unbatched-long-target", "nll_loss", (LOGITS[0], _i(1, 2)), {}, ValueError,
     "For 1D input, 1D target must have size 1, but got target size: 2", True),
    ("nll-0d-input", "nll_loss", (np.asarray(1.0), np.asarray(0)), {}, ValueError,
     "Expected 1 or more dimensions (got 0)", True),
    ("nll-3d-target-size", "nll_loss", (G.standard_normal((2, 4, 3)), np.zeros((2, 2), int)),
     {}, ValueError, "Expected target size [2, 3], got [2, 2]", True),
    ("nll-4d-target-ndim", "nll_loss", (G.standard_normal((2, 4, 3, 5)), np.zeros((2, 3), int)),
     {}, ValueError,
     "only batches of spatial targets supported (3D tensors) but got targets of dimension: 2",
     True),
    ("nll-4d-target-size", "nll_loss",
     (G.standard_normal((2, 4, 3, 5)), np.zeros((2, 3, 4), int)), {}, ValueError,
     "size mismatch (got input: [2, 4, 3, 5] , target: [2, 3, 4]", True),
    ("nll-5d-target-size", "nll_loss",
     (G.standard_normal((2, 4, 3, 1, 2)), np.zeros((2, 3, 2), int)), {}, ValueError,
     "Expected target size [2, 3, 1, 2], got [2, 3, 2]", True),
    # A float target for class indices.
    ("nll-float-target", "nll_loss", (LOGITS, TARGET.astype(np.float64)), {}, TypeError,
     "expected target dtype to be Long or Byte, but got Double", True),
    ("nll-bool-target", "nll_loss", (LOGITS, TARGET > 0), {}, TypeError,
     "expected target dtype to be Long or Byte, but got Bool", True),
    ("ce-float-target", "cross_entropy", (LOGITS, TARGET.astype(np.float64)), {}, TypeError,
     "expected target dtype to be Long or Byte, but got Double", True),
    # Integer probability targets.
    ("ce-int-probabilities", "cross_entropy", (LOGITS, np.zeros((3, 4), np.int64)), {},
     TypeError, "Expected floating point type for target with class probabilities, got Long",
     True),
    ("ce-uint8-probabilities", "cross_entropy", (LOGITS, np.zeros((3, 4), np.uint8)), {},
     TypeError, "Expected floating point type for target with class probabilities, got Byte",
     True),
    # ignore_index with probability targets (a negative one is accepted, as torch does).
    ("ce-probabilities-ignore-255", "cross_entropy", (LOGITS, PROBS), {"ignore_index": 255},
     ValueError, "ignore_index is not supported for floating point target", True),
    ("ce-probabilities-ignore-0", "cross_entropy", (LOGITS, PROBS), {"ignore_index": 0},
     ValueError, "ignore_index is not supported for floating point target", True),
    # Reductions.
    ("nll-reduction", "nll_loss", (LOGITS, TARGET), {"reduction": "avg"}, ValueError,
     "avg is not a valid value for reduction", True),
    ("bce-reduction", "binary_cross_entropy", (UNIT, UNIT), {"reduction": "avg"}, ValueError,
     "avg is not a valid value for reduction", True),
    # binary_cross_entropy: values outside [0, 1] (eager arrays only), shapes.
    ("bce-input-above-1", "binary_cross_entropy", (np.asarray([0.5, 1.5]), np.asarray([1.0, 0.0])),
     {}, ValueError, "all elements of input should be between 0 and 1", True),
    ("bce-input-negative", "binary_cross_entropy", (np.asarray([-0.1, 0.5]), np.ones(2)), {},
     ValueError, "all elements of input should be between 0 and 1", True),
    ("bce-input-nan", "binary_cross_entropy", (np.asarray([np.nan, 0.5]), np.ones(2)), {},
     ValueError, "all elements of input should be between 0 and 1", True),
    ("bce-target-above-1", "binary_cross_entropy",
     (np.asarray([0.5, 0.5]), np.asarray([2.0, 1.0])), {}, ValueError, "all elements of target should be between 0 and 1", True),
    ("bce-target-shape", "binary_cross_entropy", (UNIT, UNIT[:, :1]), {}, ValueError,
     "Using a target size ((3, 1)) that is different to the input size ((3, 4)) is deprecated. "
     "Please ensure they have the same size.", False),
    ("bce-weight-shape", "binary_cross_entropy", (UNIT, UNIT), {"weight": np.ones(5)},
     ValueError, "Attempting to broadcast a dimension of length 5 at -1! Mismatching argument "
     "at index 1 had (5,); but expected shape should be broadcastable to [3, 4]", False),
    ("bce-weight-larger", "binary_cross_entropy", (UNIT, UNIT), {"weight": np.ones((2, 1, 1))},
     ValueError, "output with shape [3, 4] doesn't match the broadcast shape [2, 3, 4]", True),
    # binary_cross_entropy_with_logits: shapes of target, weight and pos_weight.
    ("bcel-target-shape", "binary_cross_entropy_with_logits", (UNIT, UNIT[:, :1]), {},
     ValueError, "Target size ((3, 1)) must be the same as input size ((3, 4))", False),
    ("bcel-weight-shape", "binary_cross_entropy_with_logits", (UNIT, UNIT),
     {"weight": np.ones(5)}, ValueError,
     "The size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 1",
     True),
    ("bcel-pos-weight-shape", "binary_cross_entropy_with_logits", (UNIT, UNIT),
     {"pos_weight": np.ones(3)}, ValueError,
     "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1",
     True),
    ("bcel-pos-weight-larger", "binary_cross_entropy_with_logits", (UNIT, UNIT),
     {"pos_weight": np.ones((2, 1, 4))}, ValueError,
     "output with shape [3, 4] doesn't match the broadcast shape [2, 3, 4]", True),
]

#: Bad calls whose check reads array values: skipped by lazy arrays (Dask).
VALUE_CHECKS = {c[0] for c in BAD_CALLS if c[4] is IndexError or "between 0 and 1" in c[5]}


def _to_backend(backend, value):
    return backend.from_numpy(value) if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda c: c[0])
def test_bad_input_raises_with_torch_wording(backend, call):
    name, loss, args, options, exc, message, _ = call
    if backend.name == "dask" and name in VALUE_CHECKS:
        pytest.skip("value checks do not run on lazy arrays")
    args = [_to_backend(backend, a) for a in args]
    options = {k: _to_backend(backend, v) for k, v in options.items()}
    with pytest.raises(exc, match=re.escape(message)):
        call_quietly(getattr(anyloss, loss), *args, **options)


@pytest.mark.parametrize("call", [c for c in BAD_CALLS if c[6]], ids=lambda c: c[0])
def test_torch_words_it_alike(call):
    """The messages above are torch's own (torch raises RuntimeError for most of them)."""
    _, loss, args, options, exc, message, _ = call
    tensors = [torch.tensor(a) for a in args]
    tensor_options = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                      for k, v in options.items()}
    with pytest.raises((exc, RuntimeError)) as info:
        call_quietly(getattr(F, loss), *tensors, **tensor_options)
    assert str(info.value) == message


def test_torch_ignores_a_negative_label_smoothing_where_anyloss_refuses_it():
    """A documented deviation: the issue asks for [0, 1] to be enforced on both sides."""
    out = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGET), label_smoothing=-0.1)
    assert out.isfinite()
    with pytest.raises(ValueError, match="label_smoothing must be between"):
        anyloss.cross_entropy(LOGITS, TARGET, label_smoothing=-0.1)


# --- lazy arrays: no value checks, no compute, invalid targets give nan -----------------


def test_lazy_dask_gives_nan_for_an_out_of_range_target():
    da = pytest.importorskip("dask.array")
    x = da.from_array(LOGITS, chunks=2)
    out = anyloss.cross_entropy(x, da.from_array(_i(0, 5, 1), chunks=2), reduction="none")
    values = np.asarray(out.compute())
    assert np.isnan(values[1]) and np.isfinite(values[[0, 2]]).all()


def test_jit_gives_nan_for_an_out_of_range_target():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    loss = jax.jit(lambda x, t: anyloss.nll_loss(x, t))
    assert np.isnan(float(loss(jnp.asarray(LOGITS), jnp.asarray(_i(0, 5, 1)))))
    # Eager JAX arrays are checked.
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds\."):
        anyloss.nll_loss(jnp.asarray(LOGITS), jnp.asarray(_i(0, 5, 1)))


def test_lazy_dask_skips_the_probability_range_check():
    da = pytest.importorskip("dask.array")
    out = anyloss.binary_cross_entropy(da.from_array(np.asarray([0.5, 1.5])),
                                       da.from_array(np.asarray([1.0, 0.0])), reduction="none")
    assert np.isfinite(np.asarray(out.compute())[0])


# --- argument types and dtypes --------------------------------------------------------


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy", "binary_cross_entropy",
                                  "binary_cross_entropy_with_logits"])
def test_non_arrays_and_mixed_libraries_are_type_errors(loss):
    with pytest.raises(TypeError, match=rf"{loss}\(\): argument 'target' must be an array"):
        getattr(anyloss, loss)(UNIT, [0, 1, 2])
    with pytest.raises(TypeError, match=rf"{loss}\(\): argument 'target' must be an array"):
        getattr(anyloss, loss)(UNIT, None)
    target = TARGET if loss in ("nll_loss", "cross_entropy") else UNIT
    with pytest.raises(TypeError, match="'input' is a numpy array and 'weight' is a torch array"):
        getattr(anyloss, loss)(UNIT, target, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy"])
def test_integer_input_is_a_type_error(loss):
    with pytest.raises(TypeError, match="expected a floating-point input"):
        getattr(anyloss, loss)(np.zeros((3, 4), np.int64), TARGET)


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.uint8])
@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy"])
def test_any_integer_target_dtype_is_accepted(backend, loss, dtype):
    """torch takes int64 and uint8 only; JAX without x64 has int32 targets, so anyloss takes all.

    ``ignore_index=-100`` is not representable in uint8: no target is ignored then.
    """
    target = np.asarray([0, 3, 1, 2])
    logits = G.standard_normal((4, 4))
    expected = getattr(F, loss)(torch.tensor(logits), torch.tensor(target), reduction="none")
    out = getattr(anyloss, loss)(backend.from_numpy(logits),
                                 backend.from_numpy(target.astype(dtype)), reduction="none")
    assert_close(backend.to_numpy(out), expected.numpy(), **FLOAT64)


def test_uint8_target_with_ignore_index_in_range():
    logits, target = G.standard_normal((4, 5)), np.asarray([0, 255, 4, 255], dtype=np.uint8)
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(target), ignore_index=255,
                               label_smoothing=0.2)
    out = anyloss.cross_entropy(logits, target, ignore_index=255, label_smoothing=0.2)
    assert_close(out, expected.numpy(), **FLOAT64)


def test_unbatched_input_takes_a_size_1_target_as_torch_does():
    expected = F.cross_entropy(torch.tensor(LOGITS[0]), torch.tensor(_i(2)), reduction="none")
    out = anyloss.cross_entropy(LOGITS[0], _i(2), reduction="none")
    assert out.shape == ()
    assert_close(out, expected.numpy(), **FLOAT64)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_result_keeps_the_input_dtype_and_integer_targets_stay_integer(backend, dtype):
    if backend.name == "array_api_strict" and dtype == np.float16:
        pytest.skip("array_api_strict has no float16")
    x = backend.from_numpy(LOGITS.astype(dtype))
    t = backend.from_numpy(TARGET)
    out = anyloss.cross_entropy(x, t, weight=backend.from_numpy(np.ones(4, dtype)))
    assert backend.to_numpy(out).dtype == dtype
    assert backend.to_numpy(t).dtype == np.int64
    out = anyloss.binary_cross_entropy(backend.from_numpy(UNIT.astype(dtype)),
                                       backend.from_numpy(UNIT.astype(dtype)))
    assert backend.to_numpy(out).dtype == dtype


def test_legacy_arguments_warn_and_override_reduction():
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = anyloss.nll_loss(LOGITS, TARGET, reduce=False, reduction="sum")
    assert out.shape == (3,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGET), size_average=False)
        out = anyloss.cross_entropy(LOGITS, TARGET, size_average=False)
    assert_close(out, expected.numpy(), **FLOAT64)


def test_positional_order_is_torchs():
    w = G.uniform(0.5, 2, 4)
    t = torch.tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = F.nll_loss(t(LOGITS), t(TARGET), t(w), None, 3, None, "sum")
        out = anyloss.nll_loss(LOGITS, TARGET, w, None, 3, None, "sum")
        assert_close(out, expected.numpy(), **FLOAT64)
        expected = F.cross_entropy(t(LOGITS), t(TARGET), t(w), None, 1, None, "none", 0.3)
        out = anyloss.cross_entropy(LOGITS, TARGET, w, None, 1, None, "none", 0.3)
        assert_close(out, expected.numpy(), **FLOAT64)
        expected = F.binary_cross_entropy_with_logits(t(LOGITS), t(UNIT), t(w), None, None,
                                                      "none", t(w))
        out = anyloss.binary_cross_entropy_with_logits(LOGITS, UNIT, w, None, None, "none", w)
        assert_close(out, expected.numpy(), **FLOAT64)


def test_gradients_stay_finite_at_extreme_logits():
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    anyloss.cross_entropy(x, torch.tensor([1, 0]), label_smoothing=0.1).backward()
    assert torch.isfinite(x.grad).all()
    z = torch.tensor([1e4, -1e4, 100.0, -100.0], dtype=torch.float64, requires_grad=True)
    anyloss.binary_cross_entropy_with_logits(z, torch.tensor([0.0, 1.0, 0.5, 0.5],
                                                             dtype=torch.float64)).backward()
    assert torch.isfinite(z.grad).all()
