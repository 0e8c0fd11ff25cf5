"""The namespace core: argument types, library mixing, reductions, warnings, dtypes, bad input."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import FLOAT64, assert_close

import anyloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

#: The losses of the foundation issue, with a builder of valid (input, target, ...) arrays.
PAIR_LOSSES = ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "soft_margin_loss",
               "kl_div", "poisson_nll_loss", "hinge_embedding_loss"]
LEGACY_LOSSES = ["l1_loss", "mse_loss", "smooth_l1_loss", "soft_margin_loss", "kl_div",
                 "poisson_nll_loss", "hinge_embedding_loss"]


def _pair(backend, shape=(3, 4)):
    g = np.random.default_rng(1)
    return backend.from_numpy(g.standard_normal(shape)), backend.from_numpy(g.standard_normal(shape))


# --- argument types ---------------------------------------------------------


@pytest.mark.parametrize("loss", PAIR_LOSSES)
@pytest.mark.parametrize("bad", [[1.0, 2.0], "abc", 1.5, None])
def test_non_array_target_is_a_type_error_naming_it(loss, bad):
    with pytest.raises(TypeError, match=rf"{loss}\(\): argument 'target' must be an array"):
        getattr(anyloss, loss)(np.ones(2), bad)


def test_non_array_input_is_named():
    with pytest.raises(TypeError, match="argument 'input' must be an array, not list"):
        anyloss.mse_loss([1.0, 2.0], np.ones(2))


def test_mixing_libraries_names_both(backend):
    if backend.name == "numpy":
        other = torch.ones(3, dtype=torch.float64)
        other_name = "torch"
    else:
        other, other_name = np.ones(3), "numpy"
    with pytest.raises(TypeError, match=rf"'input' is a {backend.name} array and 'target' is a {other_name} array"):
        anyloss.mse_loss(backend.from_numpy(np.ones(3)), other)


def test_float_var_is_accepted_but_not_an_int_var():
    x, y = np.zeros(3), np.ones(3)
    assert_close(anyloss.gaussian_nll_loss(x, y, 2.0),
                 F.gaussian_nll_loss(torch.tensor(x), torch.tensor(y), 2.0).numpy(), **FLOAT64)
    with pytest.raises(TypeError, match="argument 'var' must be an array, not int"):
        anyloss.gaussian_nll_loss(x, y, 2)


def test_integer_inputs_are_a_type_error():
    with pytest.raises(TypeError, match="expected a floating-point input"):
        anyloss.mse_loss(np.arange(3), np.arange(3))


def test_complex_is_accepted_by_l1_only():
    z = np.ones(3) + 1j
    assert anyloss.l1_loss(z, np.zeros(3, dtype=complex)).dtype == np.float64
    with pytest.raises(TypeError, match="complex inputs are not supported"):
        anyloss.mse_loss(z, z)


def test_integer_target_takes_the_float_input_dtype(backend):
    x = backend.from_numpy(np.ones(3, dtype=np.float32))
    y = backend.from_numpy(np.arange(3))
    assert backend.to_numpy(anyloss.mse_loss(x, y)).dtype == np.float32


# --- reductions -------------------------------------------------------------


@pytest.mark.parametrize("loss", PAIR_LOSSES + ["gaussian_nll_loss", "margin_ranking_loss"])
def test_invalid_reduction(loss):
    x = np.full(3, 0.5)
    args = {"gaussian_nll_loss": (x, x, x), "margin_ranking_loss": (x, x, x)}.get(loss, (x, x))
    with pytest.raises(ValueError, match=r"^foo is not a valid value for reduction$"):
        getattr(anyloss, loss)(*args, reduction="foo")


LEGACY_PAIRS = [(s, r) for s in (None, True, False) for r in (None, True, False)
                if (s, r) != (None, None)]


@pytest.mark.parametrize("loss", LEGACY_LOSSES)
@pytest.mark.parametrize(("size_average", "reduce"), LEGACY_PAIRS)
def test_legacy_size_average_and_reduce(loss, size_average, reduce):
    g = np.random.default_rng(2)
    x, y = g.uniform(0.1, 1, (3, 4)), g.uniform(0.1, 1, (3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(F, loss)(torch.tensor(x), torch.tensor(y),
                                    size_average=size_average, reduce=reduce)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        actual = getattr(anyloss, loss)(x, y, size_average=size_average, reduce=reduce)
    assert_close(actual, expected.numpy(), **FLOAT64)


def test_legacy_margin_ranking():
    x = np.asarray([0.3, -0.2])
    y = np.asarray([1.0, -1.0])
    with pytest.warns(UserWarning, match="please use reduction='sum' instead"):
        out = anyloss.margin_ranking_loss(x, -x, y, 0.5, size_average=False)
    expected = F.margin_ranking_loss(torch.tensor(x), torch.tensor(-x), torch.tensor(y), 0.5,
                                     reduction="sum")
    assert_close(out, expected.numpy(), **FLOAT64)


def test_elementwise_mean_is_a_deprecated_mean():
    with pytest.warns(UserWarning, match="elementwise_mean"):
        out = anyloss.l1_loss(np.zeros(2), np.asarray([1.0, 3.0]), reduction="elementwise_mean")
    assert float(out) == 2.0


def test_float16_sums_accumulate_in_float32(backend):
    if backend.name in ("array_api_strict", "dask"):
        pytest.skip(f"{backend.name} has no float16 in its namespace")
    x = np.full(20000, 0.1, dtype=np.float16)
    out = anyloss.l1_loss(backend.from_numpy(x), backend.from_numpy(np.zeros_like(x)),
                          reduction="sum")
    exact = np.float16(np.sum(x.astype(np.float32)))  # 2000 in float16; a float16 running sum stalls at 256
    assert backend.to_numpy(out).dtype == np.float16
    assert backend.to_numpy(out) == exact


def test_empty_mean_is_nan_without_warning(backend):
    x = backend.from_numpy(np.zeros((0, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = backend.to_numpy(anyloss.mse_loss(x, x))
    assert np.isnan(out)


# --- warnings ---------------------------------------------------------------


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"])
def test_broadcast_target_warns_like_torch(backend, loss):
    x, _ = _pair(backend, (3, 4))
    y = backend.from_numpy(np.ones(4))
    with pytest.warns(UserWarning, match=r"Using a target size \(4,\) that is different to the input size \(3, 4\)"):
        getattr(anyloss, loss)(x, y)


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"])
def test_same_shapes_do_not_warn(loss):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(anyloss, loss)(np.ones(3), np.zeros(3))


def test_shapes_that_do_not_broadcast():
    message = re.escape(
        "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 1"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=message):
            F.mse_loss(torch.ones(4, 2), torch.ones(4, 3))
        with pytest.raises(ValueError, match=message):
            anyloss.mse_loss(np.ones((4, 2)), np.ones((4, 3)))


def test_kl_div_mean_warns_and_batchmean_does_not():
    x, y = np.log(np.full((2, 3), 1 / 3)), np.full((2, 3), 1 / 3)
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        anyloss.kl_div(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        anyloss.kl_div(x, y, reduction="batchmean")


# --- loss-specific checks ---------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_huber_rejects_non_positive_delta(delta):
    with pytest.raises(ValueError, match=r"^huber_loss does not support non-positive values for delta\.$"):
        anyloss.huber_loss(np.ones(2), np.zeros(2), delta=delta)


def test_smooth_l1_rejects_negative_beta():
    with pytest.raises(ValueError, match=r"^smooth_l1_loss does not support negative values for beta\.$"):
        anyloss.smooth_l1_loss(np.ones(2), np.zeros(2), beta=-0.5)


def test_smooth_l1_with_beta_zero_is_l1(backend):
    x, y = _pair(backend)
    for reduction in ("none", "mean", "sum"):
        a = backend.to_numpy(anyloss.smooth_l1_loss(x, y, reduction=reduction, beta=0.0))
        b = backend.to_numpy(anyloss.l1_loss(x, y, reduction=reduction))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "huber_loss"])
def test_weight_must_have_the_input_shape(loss):
    with pytest.raises(ValueError, match=r"^Weights and input must have the same size\.$"):
        getattr(anyloss, loss)(np.ones((2, 3)), np.ones((2, 3)), weight=np.ones(3))


def test_gaussian_negative_var(backend):
    x, y = _pair(backend)
    var = backend.from_numpy(np.full((3, 4), -1.0))
    if backend.name == "dask":
        anyloss.gaussian_nll_loss(x, y, var)  # value checks are skipped on lazy arrays
        return
    with pytest.raises(ValueError, match=r"^var has negative entry/entries$"):
        anyloss.gaussian_nll_loss(x, y, var)
    with pytest.raises(ValueError, match=r"^var has negative entry/entries$"):
        anyloss.gaussian_nll_loss(x, y, -1.0)


@pytest.mark.parametrize("var_shape", [(4,), (4, 2), (2, 3, 4), (3, 2)])
def test_gaussian_var_of_incorrect_size(var_shape):
    with pytest.raises(ValueError, match=r"^var is of incorrect size$"):
        F.gaussian_nll_loss(torch.ones(3, 4), torch.ones(3, 4), torch.ones(var_shape))
    with pytest.raises(ValueError, match=r"^var is of incorrect size$"):
        anyloss.gaussian_nll_loss(np.ones((3, 4)), np.ones((3, 4)), np.ones(var_shape))


def test_gaussian_negative_var_check_is_skipped_under_jit():
    jnp = pytest.importorskip("jax.numpy")
    import jax

    f = jax.jit(lambda v: anyloss.gaussian_nll_loss(jnp.zeros(3), jnp.ones(3), v))
    assert jnp.isfinite(f(jnp.ones(3)))  # traced: no host sync, no error
    with pytest.raises(ValueError, match="var has negative"):
        anyloss.gaussian_nll_loss(jnp.zeros(3), jnp.ones(3), -jnp.ones(3))  # eager: checked


def test_margin_ranking_needs_equal_dimensions():
    with pytest.raises(ValueError, match=r"margin_ranking_loss : All input tensors should have same dimension but got sizes: input1: \(3,\), input2: \(3,\), target: \(3, 1\)"):
        anyloss.margin_ranking_loss(np.ones(3), np.ones(3), np.ones((3, 1)))


# --- packaging --------------------------------------------------------------


def test_import_loads_no_array_framework():
    """``import anyloss`` must stay light: no torch, jax, cupy or dask."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import anyloss"],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "anyloss" in imported
    for framework in ("torch", "jax", "cupy", "dask"):
        assert framework not in imported, f"import anyloss imported {framework}"


def test_subpackages_are_installed():
    import anyloss.backends
    import anyloss.conformance

    assert anyloss.backends.__name__ == "anyloss.backends"
    assert anyloss.conformance.__name__ == "anyloss.conformance"


@pytest.mark.parametrize("level", ["all", "none"])
def test_a_0d_numpy_result_is_always_a_numpy_scalar(level):
    """One rule for the type of a 0-d result on NumPy, whatever path computed it: a NumPy
    scalar of the result's dtype (as NumPy's reductions give), never a 0-d ndarray."""
    from anyloss.conformance import catalogue

    zero_d = 0
    for case in catalogue.cases():
        with anyloss.fast_paths(level), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = getattr(anyloss, case.loss)(**case.arrays, **case.options)
        if np.ndim(out) == 0:
            zero_d += 1
            assert type(out) is np.dtype(out.dtype).type, (case.id, type(out))
    assert zero_d > 500  # the catalogue's reduced cases, every loss


def test_a_0d_result_does_not_depend_on_the_input_size():
    """The NumPy cross-entropy pass (large inputs) and the formula (small ones) agree on type."""
    g = np.random.default_rng(0)
    for n in (4, 1 << 12):
        x = g.standard_normal((n, 16)).astype(np.float32)
        out = anyloss.cross_entropy(x, g.integers(0, 16, n))
        assert type(out) is np.float32, (n, type(out))
        loss, _ = anyloss.cross_entropy_and_grad(x, g.integers(0, 16, n))
        assert type(loss) is np.float32, (n, type(loss))
