"""ctc_loss and ctc_loss_and_grad: closed forms, fast vs generic paths, gradients, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import anyloss
from anyloss.conformance import namespaces

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _random_case(seed=0, T=12, N=5, C=6, S=4, dtype=np.float64):
    g = np.random.default_rng(seed)
    x = g.standard_normal((T, N, C))
    lp = (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(dtype)
    targets = g.integers(1, C, (N, S))
    if N > 1:
        targets[1, :4] = [2, 2, 3, 3]  # repeats need blanks between them
    il = np.array([T, T - 3, 0, 5, T])[:N]
    tl = np.array([S, 4, 0, 3, 0])[:N]
    return lp, targets, il, tl


def _torch_loss_and_grad(lp, targets, il, tl, **options):
    x = torch.tensor(lp, requires_grad=True)
    loss = F.ctc_loss(x, torch.tensor(targets), torch.tensor(il), torch.tensor(tl), **options)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


def test_closed_form_one_path():
    """T equal to the target length, no repeats: a single path, the sum of the label log-probs."""
    lp, _, _, _ = _random_case(T=4, N=1, C=6)
    labels = [3, 1, 5, 2]
    loss = anyloss.ctc_loss(lp, np.asarray([labels]), [4], [4], reduction="sum")
    expected = -sum(lp[t, 0, c] for t, c in enumerate(labels))
    assert float(loss) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("T", [1, 3, 7])
def test_closed_form_uniform(T):
    """Uniform over C classes, one label: T (T + 1) / 2 of the C**T paths collapse to it."""
    C = 3
    lp = np.full((T, 1, C), -math.log(C))
    loss = anyloss.ctc_loss(lp, np.asarray([[2]]), [T], [1], reduction="none")
    assert float(loss[0]) == pytest.approx(-math.log(T * (T + 1) / 2) + T * math.log(C), rel=1e-12)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_long_sequence_float32_finite(engine, monkeypatch):
    from anyloss.backends.numpy import compiled

    if engine == "numba" and not compiled.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(compiled, "HAVE_NUMBA", engine == "numba")
    g = np.random.default_rng(3)
    T, N, C, S = 2000, 2, 20, 300
    x = g.standard_normal((T, N, C)).astype(np.float32)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    targets = g.integers(1, C, (N, S))
    loss = anyloss.ctc_loss(lp, targets, [T, T - 100], [S, S - 50], reduction="none")
    assert loss.dtype == np.float32 and np.all(np.isfinite(loss))
    expected = F.ctc_loss(torch.tensor(lp), torch.tensor(targets), torch.tensor([T, T - 100]),
                          torch.tensor([S, S - 50]), reduction="none").numpy()
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


@pytest.mark.parametrize("name", anyloss._registry.libraries("ctc_loss"))
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_fast_path_equals_generic(name, zero_infinity):
    try:
        ns = namespaces.get(name)
    except ImportError as exc:
        pytest.skip(str(exc))
    lp, targets, il, tl = _random_case(1)
    targets[3], il[3] = [1, 1, 1, 1], 4  # [1, 1, 1] needs 5 frames: impossible
    args = [ns.from_numpy(a) for a in (lp, targets, il, tl)]
    fast = ns.to_numpy(anyloss.ctc_loss(*args, reduction="none", zero_infinity=zero_infinity))
    with anyloss.fast_paths(enabled=False):
        assert not anyloss.fast_paths_enabled()
        generic = ns.to_numpy(anyloss.ctc_loss(*args, reduction="none", zero_infinity=zero_infinity))
    assert anyloss.fast_paths_enabled()
    np.testing.assert_allclose(fast, generic, rtol=1e-10)
    assert (fast[3] == 0) if zero_infinity else (fast[3] == np.inf)


def test_set_fast_paths_switch():
    anyloss.set_fast_paths(False)
    try:
        assert not anyloss.fast_paths_enabled()
        assert anyloss._registry.lookup("checked", "ctc_loss", namespaces.get("numpy").xp) is None
    finally:
        anyloss.set_fast_paths(True)
    assert anyloss._registry.lookup("checked", "ctc_loss", namespaces.get("numpy").xp) is not None


@pytest.mark.parametrize("name", ["numpy", "array_api_strict", "torch", "jax", "dask"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_loss_and_grad_equals_torch_autograd(name, reduction, zero_infinity):
    try:
        ns = namespaces.get(name)
    except ImportError as exc:
        pytest.skip(str(exc))
    lp, targets, il, tl = _random_case(2)
    targets[3], il[3] = [1, 1, 1, 1], 4  # an infinite loss: nan gradient, or zeros with zero_infinity
    options = {"reduction": reduction, "zero_infinity": zero_infinity}
    expected_loss, expected_grad = _torch_loss_and_grad(lp, targets, il, tl, **options)
    loss, grad = anyloss.ctc_loss_and_grad(*[ns.from_numpy(a) for a in (lp, targets, il, tl)],
                                           **options)
    np.testing.assert_allclose(ns.to_numpy(loss), expected_loss, rtol=1e-9)
    grad = ns.to_numpy(grad)
    assert grad.shape == lp.shape and grad.dtype == np.float64
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-9)  # nan where torch's is
    assert np.all(grad[:, 3] == 0) if zero_infinity else np.all(np.isnan(grad[:4, 3]))
    assert np.all(grad[il[0]:, 0] == 0) and np.all(grad[il[1]:, 1] == 0)


def test_loss_and_grad_numpy_without_numba(monkeypatch):
    from anyloss.backends.numpy import compiled

    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)
    lp, targets, il, tl = _random_case(4)
    expected_loss, expected_grad = _torch_loss_and_grad(lp, targets, il, tl)
    loss, grad = anyloss.ctc_loss_and_grad(lp, targets, il, tl)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-9)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("fast", [True, False])
def test_autodiff_through_torch_and_jax_matches_torch(fast):
    lp, targets, il, tl = _random_case(5)
    _, expected = _torch_loss_and_grad(lp, targets, il, tl, zero_infinity=True)
    with anyloss.fast_paths(enabled=fast):
        x = torch.tensor(lp, requires_grad=True)
        anyloss.ctc_loss(x, *(torch.tensor(a) for a in (targets, il, tl)), zero_infinity=True).backward()
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-9, atol=1e-12)
        jax = pytest.importorskip("jax")
        namespaces.get("jax")  # 64-bit JAX
        jnp = jax.numpy
        grad = jax.jit(jax.grad(lambda a, b, c, d: anyloss.ctc_loss(a, b, c, d, zero_infinity=True)))(
            *(jnp.asarray(a) for a in (lp, targets, il, tl)))
        np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-9, atol=1e-12)


def test_lengths_as_lists_and_tuples():
    lp, targets, il, tl = _random_case(6)
    expected = anyloss.ctc_loss(lp, targets, il, tl, reduction="none")
    for convert in (list, tuple):
        got = anyloss.ctc_loss(lp, targets, convert(int(n) for n in il),
                               convert(int(n) for n in tl), reduction="none")
        np.testing.assert_array_equal(got, expected)
    t = torch.tensor(lp)
    got = anyloss.ctc_loss(t, torch.tensor(targets), [int(n) for n in il], tuple(int(n) for n in tl),
                           reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_zero_lengths():
    lp, targets, _, _ = _random_case(7)
    loss = anyloss.ctc_loss(lp, targets, [0, 0, 12, 5, 12], [0, 2, 0, 3, 4], reduction="none")
    assert loss[0] == 0 and loss[1] == np.inf
    assert loss[2] == pytest.approx(-lp[:, 2, 0].sum(), rel=1e-12)
    zeroed = anyloss.ctc_loss(lp, targets, [0, 0, 12, 5, 12], [0, 2, 0, 3, 4], reduction="none",
                              zero_infinity=True)
    assert zeroed[1] == 0


def _bad(lp, targets, il, tl, **options):
    with pytest.raises((ValueError, TypeError, IndexError)) as info:
        anyloss.ctc_loss(lp, targets, il, tl, **options)
    return info


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda a: {**a, "il": a["il"].astype(float)}, ValueError, "input_lengths must be integral"),
        (lambda a: {**a, "tl": a["tl"].astype(float)}, ValueError, "target_lengths must be integral"),
        (lambda a: {**a, "il": [12.0, 9.0, 0.0, 5.0, 12.0]}, TypeError, "input_lengths must be integral"),
        (lambda a: {**a, "il": a["il"][:3]}, ValueError, "input_lengths must be of size batch_size"),
        (lambda a: {**a, "tl": a["tl"][:3]}, ValueError, "target_lengths must be of size batch_size"),
        (lambda a: {**a, "il": a["il"] + 1}, ValueError,
         "Expected input_lengths to have value at most 12, but got value 13"),
        (lambda a: {**a, "il": a["il"] - 1}, ValueError,
         "Expected input_lengths to have value at least 0, but got value -1"),
        (lambda a: {**a, "tl": a["tl"] - 1}, ValueError,
         "Expected target_lengths to have value at least 0, but got value -1"),
        (lambda a: {**a, "targets": a["targets"][:, :3]}, ValueError,
         "Expected tensor to have size at least 4 at dimension 1, but got size 3"),
        (lambda a: {**a, "targets": np.asarray([1, 2, 3])}, ValueError,
         "Expected tensor to have size 11 at dimension 0, but got size 3"),
        (lambda a: {**a, "blank": 6}, ValueError, "blank must be in label range"),
        (lambda a: {**a, "blank": -1}, ValueError, "blank must be in label range"),
        (lambda a: {**a, "lp": a["lp"][:0]}, ValueError, "log_probs tensor must not be empty"),
        (lambda a: {**a, "lp": a["lp"][None]}, ValueError, "Expected 3-dimensional tensor"),
        (lambda a: {**a, "targets": a["targets"].astype(float)}, TypeError, "targets must be integral"),
        (lambda a: {**a, "targets": a["targets"] + 10}, IndexError, "out of bounds"),
        (lambda a: {**a, "il": 12}, TypeError, "must be an array"),
        (lambda a: {**a, "reduction": "batchmean"}, ValueError, "batchmean is not a valid value for reduction"),
    ],
)
def test_bad_input(change, error, message):
    lp, targets, il, tl = _random_case(8)
    a = change({"lp": lp, "targets": targets, "il": il, "tl": tl})
    options = {k: a[k] for k in ("blank", "reduction") if k in a}
    info = _bad(a["lp"], a["targets"], a["il"], a["tl"], **options)
    assert info.type is error and message in str(info.value)


def test_mixed_libraries_rejected():
    lp, targets, il, tl = _random_case(9)
    with pytest.raises(TypeError, match="one array library"):
        anyloss.ctc_loss(torch.tensor(lp), targets, il, tl)


def test_dask_stays_lazy():
    try:
        ns = namespaces.get("dask")
    except ImportError as exc:
        pytest.skip(str(exc))
    import dask

    lp, targets, il, tl = _random_case(10)
    calls = []

    def count(*args, **kwargs):
        calls.append(1)
        return dask.get(*args, **kwargs)

    with dask.config.set(scheduler=count):
        loss = anyloss.ctc_loss(*(ns.from_numpy(a) for a in (lp, targets, il, tl)))
        grad = anyloss.ctc_loss_and_grad(*(ns.from_numpy(a) for a in (lp, targets, il, tl)))[1]
    assert not calls
    np.testing.assert_allclose(float(loss.compute()), float(anyloss.ctc_loss(lp, targets, il, tl)),
                               rtol=1e-12)
    assert grad.shape == lp.shape


@pytest.mark.parametrize("batch_chunk", [1, 3, 7])
def test_dask_concatenated_targets_by_batch_chunk(batch_chunk):
    """1-d (concatenated) targets on Dask: each batch chunk gathers its own labels, so the
    graph has a few tasks per chunk (the generic recursion has some per frame and state),
    nothing is computed until asked, and loss and gradient are torch's."""
    da = pytest.importorskip("dask.array")
    import dask

    g = np.random.default_rng(11)
    T, N, C = 30, 7, 6
    x = g.standard_normal((T, N, C))
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    tl = np.array([5, 0, 3, 8, 1, 4, 2])
    il = np.array([30, 10, 20, 30, 5, 25, 30])
    labels = g.integers(1, C, int(tl.sum()))
    args = (da.from_array(lp, chunks=(T, batch_chunk, C)), da.from_array(labels, chunks=4),
            da.from_array(il, chunks=batch_chunk), da.from_array(tl, chunks=batch_chunk))
    calls = []

    def count(*a, **k):
        calls.append(1)
        return dask.get(*a, **k)

    with dask.config.set(scheduler=count):
        loss = anyloss.ctc_loss(*args, reduction="none")
        _, grad = anyloss.ctc_loss_and_grad(*args, reduction="sum")
    assert not calls
    n_chunks = -(-N // batch_chunk)
    assert len(dict(loss.__dask_graph__())) <= 10 * n_chunks + 10
    expected, expected_grad = _torch_loss_and_grad(lp, labels, il, tl, reduction="none")
    np.testing.assert_allclose(loss.compute(), expected, rtol=1e-10)
    np.testing.assert_allclose(grad.compute(), expected_grad, rtol=1e-8, atol=1e-10)
