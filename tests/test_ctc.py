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


def test_jax_kernels_compile_once_per_shape_and_options():
    """Eager calls on JAX arrays reuse one compiled kernel per shape, dtype and options (an
    eager ``lax.scan`` traced and compiled its step again on every call)."""
    jax = pytest.importorskip("jax")
    from anyloss.backends import jax as kernels

    namespaces.get("jax")  # 64-bit JAX
    jnp = jax.numpy
    lp, targets, il, tl = (jnp.asarray(a) for a in _random_case(3, T=9, N=3, C=5, S=4))
    other = jnp.asarray(_random_case(4, T=9, N=3, C=5, S=4)[0])
    for function in (kernels.ctc_loss, kernels.ctc_loss_and_grad):
        function.clear_cache()
    with anyloss.fast_paths(enabled=True):
        first = anyloss.ctc_loss(lp, targets, il, tl, reduction="none")
        second = anyloss.ctc_loss(other, targets, il, tl, reduction="sum")
        assert kernels.ctc_loss._cache_size() == 1
        anyloss.ctc_loss(lp, targets, il, tl, zero_infinity=True)
        assert kernels.ctc_loss._cache_size() == 2  # another option: compiled again
        anyloss.ctc_loss_and_grad(lp, targets, il, tl)
        anyloss.ctc_loss_and_grad(other, targets, il, tl)
        assert kernels.ctc_loss_and_grad._cache_size() == 1
    expected = _torch_loss_and_grad(*_random_case(3, T=9, N=3, C=5, S=4), reduction="none")[0]
    np.testing.assert_allclose(np.asarray(first), expected, rtol=1e-12)
    assert np.isfinite(float(second))


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


# --- the compiled kernels: rescaled, block-scaled and log-space paths --------------------


def _kernels():
    from anyloss.backends.numpy import compiled

    if not compiled.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    from anyloss.backends.numpy import ctc as numpy_ctc

    return numpy_ctc, compiled.load("ctc")


def _peaky_case(seed, T, N, C, S, scale, dtype=np.float64):
    g = np.random.default_rng(seed)
    x = g.standard_normal((T, N, C)) * scale
    lp = (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(dtype)
    return lp, g.integers(1, C, (N, S)), np.full(N, T), np.full(N, S)


@pytest.mark.parametrize("scale, scaled_ok", [(1.0, True), (3.0, False)])
def test_kernel_paths_agree(scale, scaled_ok):
    """The rescaled and block-scaled recursions give the log-space recursion's loss and
    gradient; with peaky log-probabilities (scale 3) the single-scale path declines (its
    band spans more than float64's range) and the block-scaled path still answers."""
    numpy_ctc, kernels = _kernels()
    T, N, C, S = 400, 2, 40, 80
    lp, targets, il, tl = _peaky_case(20, T, N, C, S, scale)
    _, ext, skipf, _, _, _, _ = numpy_ctc._compiled_arguments(lp, targets, il, tl, 0, S)
    K = 2 * S + 1
    for n in range(N):
        reference = np.zeros_like(lp)
        ll_log = kernels.gradient_log(lp, n, ext[n], skipf[n], T, K, reference)
        scaled, blocks = np.zeros_like(lp), np.zeros_like(lp)
        ll_scaled = kernels.gradient_scaled(lp, n, ext[n], skipf[n], T, K, scaled, np.empty(C))
        ll_blocks = kernels.gradient_blocks(lp, n, ext[n], skipf[n], T, K, blocks, np.empty(C))
        assert np.isnan(ll_scaled) != scaled_ok
        assert np.isfinite(ll_blocks)
        assert ll_blocks == pytest.approx(ll_log, rel=1e-13)
        np.testing.assert_allclose(blocks[:, n], reference[:, n], rtol=1e-8, atol=1e-11)
        if scaled_ok:
            assert ll_scaled == pytest.approx(ll_log, rel=1e-13)
            np.testing.assert_allclose(scaled[:, n], reference[:, n], rtol=1e-8, atol=1e-11)
        fw = kernels.block_forward(lp, n, ext[n], skipf[n], T, K, np.empty((0, 0)),
                                   np.empty((0, 0)), np.empty(C), 0, np.empty(0), 0.0)
        assert fw == pytest.approx(ll_log, rel=1e-13)
        resume = np.zeros(K + 2)
        fw, frame, log_scale = kernels.forward_scaled(
            lp, n, ext[n], skipf[n], T, K, np.zeros(K + 2), np.zeros(K + 2), np.empty((0, 0)),
            np.empty(C), resume)
        assert np.isnan(fw) != scaled_ok
        if scaled_ok:
            assert fw == pytest.approx(ll_log, rel=1e-13)
        else:  # the block-scaled recursion goes on from the last exact frame
            assert frame > 1
            fw = kernels.block_forward(lp, n, ext[n], skipf[n], T, K, np.empty((0, 0)),
                                       np.empty((0, 0)), np.empty(C), frame, resume, log_scale)
            assert fw == pytest.approx(ll_log, rel=1e-13)


@pytest.mark.parametrize("scale", [1.0, 3.0, 8.0])
def test_long_and_peaky_match_torch(scale):
    """Every path of the kernels (rescaled, block-scaled, log space for scale 8) gives
    torch's loss and gradient in float64, lengths unsorted and a blank that is not 0."""
    _kernels()
    T, N, C, S = 300, 4, 12, 60
    lp, targets, il, tl = _peaky_case(21, T, N, C, S, scale)
    targets = np.where(targets == 5, 0, targets)  # blank=5: label 0 is an ordinary class
    il, tl = np.array([200, 300, 150, 299]), np.array([60, 40, 60, 1])
    expected_loss, expected_grad = _torch_loss_and_grad(lp, targets, il, tl, blank=5,
                                                        reduction="sum")
    loss, grad = anyloss.ctc_loss_and_grad(lp, targets, il, tl, blank=5, reduction="sum")
    np.testing.assert_allclose(loss, expected_loss.sum(), rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-7, atol=1e-10)
    forward = anyloss.ctc_loss(lp, targets, il, tl, blank=5, reduction="none")
    expected = F.ctc_loss(*(torch.tensor(a) for a in (lp, targets, il, tl)), blank=5,
                          reduction="none").numpy()
    np.testing.assert_allclose(forward, expected, rtol=1e-12)


def test_results_do_not_depend_on_threads():
    _kernels()
    lp, targets, il, tl = _peaky_case(22, 200, 5, 20, 40, 2.0)
    il = np.array([200, 120, 180, 60, 199])
    results = []
    for n in (1, 2, 3):
        with anyloss.threads(n):
            loss = anyloss.ctc_loss(lp, targets, il, tl, reduction="none")
            results.append((loss, *anyloss.ctc_loss_and_grad(lp, targets, il, tl)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_minus_inf_log_probs_as_torch():
    """A class with log-probability -inf: torch's gradient is nan there (``exp(lp) -
    exp(... - lp)``); on a label in the band the loss follows the remaining paths."""
    _kernels()
    lp, targets, il, tl = _random_case(23)
    lp = lp.copy()
    lp[3, 0, 5] = -np.inf  # a class that sample 0 may not use at frame 3
    lp[:, 4, 0] = -np.inf  # sample 4 (empty target) cannot emit blank: impossible
    expected_loss, expected_grad = _torch_loss_and_grad(lp, targets, il, tl, reduction="none")
    loss, grad = anyloss.ctc_loss_and_grad(lp, targets, il, tl, reduction="none")
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-12)
    assert np.isnan(grad[3, 0, 5]) and loss[4] == np.inf


def test_float32_grad_in_float32():
    _kernels()
    lp, targets, il, tl = _peaky_case(24, 500, 3, 30, 100, 1.0, dtype=np.float32)
    il = np.array([500, 450, 400])
    loss, grad = anyloss.ctc_loss_and_grad(lp, targets, il, tl, reduction="none")
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    # The recursions run in float64 (torch's float32 kernel runs in float32 log space, whose
    # gradient is off by ~1e-4 at these lengths): compare with torch in float64.
    expected_loss, expected_grad = _torch_loss_and_grad(lp.astype(np.float64), targets, il, tl,
                                                        reduction="none")
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert np.all(grad[450:, 1] == 0) and np.all(grad[400:, 2] == 0)
