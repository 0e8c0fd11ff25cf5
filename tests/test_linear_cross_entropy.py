"""``linear_cross_entropy`` (torch 2.13): parity with torch on every library, its gradients,
the NumPy kernel that never holds the logits, torch's errors and warning, the options."""

from __future__ import annotations

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest
from helpers import FLOAT64, CountingScheduler, assert_close

import anyloss
from anyloss import _registry
from anyloss.conformance import namespaces

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, D, C = 9, 4, 7


def _problem(seed=0, n=N, d=D, c=C, dtype=np.float64, ignored=True):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d)).astype(dtype)
    w = g.standard_normal((c, d)).astype(dtype)
    b = g.standard_normal(c).astype(dtype)
    t = g.integers(0, c, n)
    if ignored:
        t[::4] = -100
    return x, w, b, t, g.uniform(0.5, 2.0, c).astype(dtype)


#: (bias, class weight, reduction, label smoothing, ignore_index, options): every option.
OPTIONS = [
    pytest.param(bias, weight, reduction, smoothing, ignore, chunked,
                 id=f"bias={bias}-weight={weight}-{reduction}-ls={smoothing}-ii={ignore}"
                    f"-chunked={chunked}")
    for bias, weight, reduction, smoothing, ignore, chunked in itertools.product(
        [False, True], [False, True], ["none", "mean", "sum"], [0.0, 0.3], [None, 2],
        [False, True])
    if not (chunked and smoothing)  # options with smoothing warn: tested below
]


def _torch_loss_and_grads(x, w, t, kwargs):
    leaves = [torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)]
    bias = kwargs.get("linear_bias")
    if bias is not None:
        leaves.append(torch.tensor(bias, requires_grad=True))
    tk = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    tk["linear_bias"] = leaves[2] if bias is not None else None
    if tk.get("options") is not None:
        tk["options"] = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4)
    loss = F.linear_cross_entropy(leaves[0], leaves[1], torch.from_numpy(t), **tk)
    grads = torch.autograd.grad(loss.sum(), leaves)
    return loss.detach().numpy(), [g.numpy() for g in grads]


def _kwargs(x, w, b, t, cw, bias, weight, reduction, smoothing, ignore, chunked):
    if ignore is not None:
        t = np.where(t == -100, ignore, t)
    options = anyloss.LinearCrossEntropyOptions(batch_chunk_size=4) if chunked else None
    return t, {"linear_bias": b if bias else None, "weight": cw if weight else None,
               "reduction": reduction, "label_smoothing": smoothing, "ignore_index": ignore,
               "options": options}


def _ns(name):
    try:
        return namespaces.get(name)
    except ImportError as exc:
        pytest.skip(str(exc))


def _convert(ns, kwargs):
    return {k: ns.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("level", ["all", "none"])
@pytest.mark.parametrize("name", namespaces.NAMES)
@pytest.mark.parametrize(("bias", "weight", "reduction", "smoothing", "ignore", "chunked"),
                         OPTIONS)
def test_values_and_gradients_equal_torch(name, level, bias, weight, reduction, smoothing,
                                          ignore, chunked):
    ns = _ns(name)
    x, w, b, t, cw = _problem()
    t, kwargs = _kwargs(x, w, b, t, cw, bias, weight, reduction, smoothing, ignore, chunked)
    expected, expected_grads = _torch_loss_and_grads(x, w, t, kwargs)
    args = [ns.from_numpy(a) for a in (x, w, t)]
    with anyloss.fast_paths(level):
        loss = anyloss.linear_cross_entropy(*args, **_convert(ns, kwargs))
        result = anyloss.linear_cross_entropy_and_grad(*args, **_convert(ns, kwargs))
    assert_close(ns.to_numpy(loss), expected, **FLOAT64)
    assert_close(ns.to_numpy(result[0]), expected, **FLOAT64)
    assert (result[3] is None) == (not bias)
    for got, want in zip([r for r in result[1:] if r is not None], expected_grads, strict=True):
        assert_close(ns.to_numpy(got), want, **FLOAT64)


@pytest.mark.parametrize("name", namespaces.NAMES)
@pytest.mark.parametrize("case", ["k-dim", "probabilities", "unbatched", "unbatched-probs"])
def test_shapes_equal_torch(name, case):
    ns = _ns(name)
    g = np.random.default_rng(3)
    x = g.standard_normal((5, D))
    if case == "k-dim":
        w, b = g.standard_normal((C, 3, D)), g.standard_normal((C, 3))
        t = g.integers(0, C, (5, 3))
    else:
        w, b = g.standard_normal((C, D)), g.standard_normal(C)
        t = g.dirichlet(np.ones(C), 5) if "probs" in case or case == "probabilities" else None
        if case.startswith("unbatched"):
            x = x[0]
            t = g.dirichlet(np.ones(C)) if case == "unbatched-probs" else np.asarray(3)
    for reduction in ("none", "mean", "sum"):
        kwargs = {"linear_bias": b, "reduction": reduction}
        expected, grads = _torch_loss_and_grads(x, w, t, kwargs)
        args = [ns.from_numpy(a) for a in (x, w, t)]
        loss = anyloss.linear_cross_entropy(*args, **_convert(ns, kwargs))
        assert_close(ns.to_numpy(loss), expected, **FLOAT64)
        result = anyloss.linear_cross_entropy_and_grad(*args, **_convert(ns, kwargs))
        for got, want in zip(result[1:], grads, strict=True):
            assert_close(ns.to_numpy(got), want, **FLOAT64)


@pytest.mark.parametrize("fast", [True, False])
def test_torch_autograd_through_anyloss(fast):
    x, w, b, t, cw = _problem(4)
    kwargs = {"linear_bias": b, "weight": cw, "label_smoothing": 0.1}
    expected, grads = _torch_loss_and_grads(x, w, t, kwargs)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    with anyloss.fast_paths(fast):
        loss = anyloss.linear_cross_entropy(leaves[0], leaves[1], torch.from_numpy(t),
                                            linear_bias=leaves[2], weight=torch.from_numpy(cw),
                                            label_smoothing=0.1)
    got = torch.autograd.grad(loss, leaves)
    assert_close(loss.detach().numpy(), expected, **FLOAT64)
    for a, e in zip(got, grads, strict=True):
        assert_close(a.numpy(), e, **FLOAT64)


def test_jax_grad_and_jit_through_anyloss():
    jax_ns = _ns("jax")
    import jax

    x, w, b, t, cw = _problem(5)
    kwargs = {"linear_bias": b, "weight": cw, "label_smoothing": 0.1}
    expected, grads = _torch_loss_and_grads(x, w, t, kwargs)
    jt, jcw = jax_ns.from_numpy(t), jax_ns.from_numpy(cw)

    def loss_of(x, w, b, t, cw):  # every array an argument: traced, as in a training step
        return anyloss.linear_cross_entropy(x, w, t, linear_bias=b, weight=cw,
                                            label_smoothing=0.1)

    args = [jax_ns.from_numpy(a) for a in (x, w, b)]
    value, got = jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1, 2)))(*args, jt, jcw)
    assert_close(np.asarray(value), expected, **FLOAT64)
    for a, e in zip(got, grads, strict=True):
        assert_close(np.asarray(a), e, **FLOAT64)


def test_dask_stays_lazy():
    dask_ns = _ns("dask")
    import dask

    x, w, b, t, _ = _problem(6)
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        loss = anyloss.linear_cross_entropy(*[dask_ns.from_numpy(a) for a in (x, w, t)],
                                            linear_bias=dask_ns.from_numpy(b))
        assert scheduler.computes == 0
        value = np.asarray(loss.compute())
    expected, _ = _torch_loss_and_grads(x, w, t, {"linear_bias": b})
    assert_close(value, expected, **FLOAT64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_maps_the_numpy_kernel_over_row_chunks(monkeypatch, reduction):
    """The Dask kernel: one NumPy kernel call per row chunk, each with the whole weight and
    never more than its own rows; the result is torch's."""
    import dask.array as da

    from anyloss.backends.numpy import linear_cross_entropy as kernel

    calls = []
    original = kernel.linear_cross_entropy_elements

    def spy(x, linear_weight, *args, **kwargs):
        calls.append((x.shape, linear_weight.shape))
        return original(x, linear_weight, *args, **kwargs)

    monkeypatch.setattr(kernel, "linear_cross_entropy_elements", spy)
    x, w, b, t, class_weight = _problem(1, n=40)
    t = t.copy()
    t[:3] = -100
    loss = anyloss.linear_cross_entropy(
        da.from_array(x, chunks=(15, 2)), da.from_array(w, chunks=3), da.from_array(t, chunks=15),
        linear_bias=da.from_array(b, chunks=3), weight=da.from_array(class_weight, chunks=4),
        reduction=reduction, label_smoothing=0.1)
    value = np.asarray(loss.compute())
    expected, _ = _torch_loss_and_grads(x, w, t, {"linear_bias": b, "weight": class_weight,
                                                  "reduction": reduction,
                                                  "label_smoothing": 0.1})
    assert_close(value, expected, **FLOAT64)
    assert sorted(shape[0] for shape, _ in calls) == [10, 15, 15]
    assert {weight_shape for _, weight_shape in calls} == {w.shape}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_gradients_map_the_numpy_kernel_over_row_chunks(monkeypatch, reduction):
    """linear_cross_entropy_and_grad on Dask: lazy until computed, one NumPy gradient call
    per row chunk (with the whole weight), values and gradients torch's."""
    import dask
    import dask.array as da

    from anyloss.backends.numpy import linear_cross_entropy as kernel

    calls = []
    original = kernel.linear_cross_entropy_grads

    def spy(x, linear_weight, *args, **kwargs):
        calls.append((x.shape, linear_weight.shape))
        return original(x, linear_weight, *args, **kwargs)

    monkeypatch.setattr(kernel, "linear_cross_entropy_grads", spy)
    x, w, b, t, class_weight = _problem(2, n=40)
    kwargs = {"linear_bias": b, "weight": class_weight, "reduction": reduction,
              "label_smoothing": 0.1}
    scheduler = CountingScheduler()
    with dask.config.set(scheduler=scheduler):
        got = anyloss.linear_cross_entropy_and_grad(
            da.from_array(x, chunks=(15, 2)), da.from_array(w, chunks=3),
            da.from_array(t, chunks=15), **{k: da.from_array(v, chunks=4)
                                            if isinstance(v, np.ndarray) else v
                                            for k, v in kwargs.items()})
        assert scheduler.computes == 0
        got = dask.compute(*got)
    expected, grads = _torch_loss_and_grads(x, w, t, kwargs)
    assert_close(np.asarray(got[0]), expected, **FLOAT64)
    for a, e in zip(got[1:], grads, strict=True):
        assert_close(np.asarray(a), e, **FLOAT64)
    assert sorted(shape[0] for shape, _ in calls) == [10, 15, 15]
    assert {weight_shape for _, weight_shape in calls} == {w.shape}


# --- the NumPy kernel ------------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch):
    """A scratch budget of a few rows and classes: many blocks, the last one partial."""
    from anyloss.backends.numpy import linear_cross_entropy as kernel

    monkeypatch.setattr(kernel, "SCRATCH_BYTES", 3 * 8 * 13)
    return kernel


@pytest.mark.parametrize("gemm", ["blas", "numpy"])
@pytest.mark.parametrize("case", ["plain", "extreme-logits", "all-ignored", "one-row",
                                  "invalid-weight-zero"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_kernel_equals_torch_on_the_edges(small_blocks, monkeypatch, case, dtype, gemm):
    """Values and gradients, with the weight gradient added into by BLAS (beta = 1) and by
    NumPy (a matmul into blocks of 3 classes, then an add)."""
    from anyloss.backends.numpy import blas

    if gemm == "numpy":
        monkeypatch.setattr(blas, "_gemm", lambda dtype: None)
        monkeypatch.setattr(small_blocks, "WEIGHT_PART_BYTES", 3 * 5 * np.dtype(dtype).itemsize)
    elif blas.gemm_name(dtype) is None:
        pytest.skip("NumPy's BLAS is not reachable here: the 'numpy' case covers the fallback")
    x, w, b, t, cw = _problem(7, n=11, d=5, c=13, dtype=dtype)
    weight = None
    if case == "extreme-logits":
        w = (w * 3e3).astype(dtype)  # logits of about +-1e4
    elif case == "all-ignored":
        t[:] = -100
    elif case == "one-row":
        x, t = x[:1], t[1:2]
    elif case == "invalid-weight-zero":
        weight = np.zeros_like(cw)  # 'mean' of zero weights: nan, as torch
    tolerance = FLOAT64 if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-4}
    for reduction in ("none", "mean", "sum"):
        kwargs = {"linear_bias": b, "weight": weight, "reduction": reduction,
                  "label_smoothing": 0.1}
        expected, grads = _torch_loss_and_grads(x, w, t, kwargs)
        loss = anyloss.linear_cross_entropy(x, w, t, **kwargs)
        result = anyloss.linear_cross_entropy_and_grad(x, w, t, **kwargs)
        assert np.asarray(loss).dtype == dtype
        assert_close(loss, expected, **tolerance)
        assert_close(result[0], expected, **tolerance)
        for got, want in zip(result[1:], grads, strict=True):
            assert got.dtype == dtype
            scale = max(1.0, float(np.nanmax(np.abs(want)))) if np.isfinite(want).any() else 1
            assert_close(got / scale, want / scale, **tolerance)


@pytest.mark.parametrize("case", ["plain", "weight+smoothing", "smoothing", "masked-bias",
                                  "nan-row", "last-tile-one-class"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_forward_by_tiles_of_classes_equals_torch(monkeypatch, case, dtype):
    """The forward's tiles of rows and classes: the running maximum and sum over tiles, the target's logit from its tile and the smoothing product give
    torch's losses, with -inf bias over whole tiles (masked classes), a nan row, tiles of
    rows (300 rows in blocks of 128) and a last partial tile."""
    from anyloss.backends.numpy import linear_cross_entropy as kernel

    x, w, b, t, cw = _problem(3, n=300, d=16, c=5000, dtype=dtype)
    monkeypatch.setattr(kernel, "SCRATCH_BYTES", 128 * 700 * x.itemsize)
    monkeypatch.setattr(kernel, "TILE_ROWS", 128)
    rows, cols = kernel._class_tiles(300, 16, 5000, x.itemsize, None)
    assert (rows, cols) == (128, 700)
    kwargs: dict = {"linear_bias": b}
    if case == "weight+smoothing":
        kwargs.update(weight=cw, label_smoothing=0.1)
    elif case == "smoothing":
        kwargs.update(label_smoothing=0.2)
    elif case == "masked-bias":
        b[100:1600] = -np.inf  # tiles 1 and 2 wholly masked, tiles 0 and 3 in part
        t = np.where((t >= 100) & (t < 1600), 7, t)
    elif case == "nan-row":
        x[5, 3] = np.nan
    elif case == "last-tile-one-class":
        monkeypatch.setattr(kernel, "SCRATCH_BYTES", 128 * 5000 * x.itemsize - 1)
        assert kernel._class_tiles(300, 16, 5000, x.itemsize, None) == (128, 4999)
    tolerance = {"rtol": 1e-12, "atol": 0} if dtype == np.float64 else {"rtol": 2e-5,
                                                                         "atol": 0}
    for reduction in ("none", "mean", "sum"):
        expected, _ = _torch_loss_and_grads(x, w, t, {**kwargs, "reduction": reduction})
        loss = anyloss.linear_cross_entropy(x, w, t, reduction=reduction, **kwargs)
        assert np.asarray(loss).dtype == dtype
        assert_close(loss, expected, **tolerance)
    if case == "nan-row":
        assert np.isnan(anyloss.linear_cross_entropy(x, w, t, reduction="none", **kwargs)[5])


@pytest.mark.parametrize("smoothing", [False, True])
def test_numpy_kernel_is_used_and_never_holds_the_logits(monkeypatch, smoothing):
    """The kernel answers plain NumPy calls; with a 1 MiB budget (and 256 KiB class blocks)
    its peak allocation is a few blocks, far below the (N, C) logits; with label smoothing
    and class weights too (the forward's smoothing product converts the weight to float64
    by blocks, never whole)."""
    from anyloss.backends.numpy import linear_cross_entropy as kernel

    monkeypatch.setattr(kernel, "SCRATCH_BYTES", 1 << 20)
    monkeypatch.setattr(kernel, "WEIGHT_PART_BYTES", 1 << 18)
    calls = []
    for function in ("linear_cross_entropy", "linear_cross_entropy_and_grad"):
        original = getattr(kernel, function)

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel, function, counting)
    _registry._clear_caches()
    try:
        x, w, b, t, cw = _problem(8, n=512, d=32, c=20000, dtype=np.float32)
        options = {"linear_bias": b}
        if smoothing:
            options.update(weight=cw, label_smoothing=0.1)
        logits_bytes = 512 * 20000 * 4
        for function in (anyloss.linear_cross_entropy, anyloss.linear_cross_entropy_and_grad):
            function(x[:2], w[:300], t[:2] % 300, **{**options, "linear_bias": b[:300],
                     **({"weight": cw[:300]} if smoothing else {})})  # numba loads or compiles
        calls.clear()
        tracemalloc.start()
        loss = anyloss.linear_cross_entropy(x, w, t, **options)
        _, forward_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = anyloss.linear_cross_entropy_and_grad(x, w, t, **options)
        _, gradient_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        _registry._clear_caches()
    assert len(calls) == 2
    gradients_bytes = x.nbytes + w.nbytes + b.nbytes
    assert forward_peak < 0.1 * logits_bytes, forward_peak
    assert gradient_peak - gradients_bytes < 0.1 * logits_bytes, gradient_peak
    with anyloss.fast_paths(False):
        generic = anyloss.linear_cross_entropy_and_grad(x, w, t, **options)
    np.testing.assert_allclose(loss, generic[0], rtol=1e-5)
    for got, want in zip(result[1:], generic[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# --- errors, the warning and the options -------------------------------------------------------


def _np_call(x=None, w=None, t=None, **kwargs):
    px, pw, _, pt, _ = _problem()
    return anyloss.linear_cross_entropy(px if x is None else x, pw if w is None else w,
                                        pt if t is None else t, **kwargs)


ERRORS = [
    (lambda x, w, t: {"x": x[None]}, ValueError,
     r"^expected input with dimensionality 1 or 2, got 3$"),
    (lambda x, w, t: {"w": w[0]}, ValueError,
     r"^expected linear_weight with dimensionality at least 2, got 1$"),
    (lambda x, w, t: {"w": w[:, :2]}, ValueError,
     r"^expected equal input and linear_weight last dimensions \(in_features\), got 4 and 2, "
     r"respectively$"),
    (lambda x, w, t: {"linear_bias": np.zeros(3)}, ValueError,
     r"^expected linear_bias shape \(7,\), got \(3,\)$"),
    (lambda x, w, t: {"x": x[0], "w": np.zeros((C, 2, D)), "t": np.asarray(0)}, ValueError,
     r"^K-dimensional loss defined by linear_weight shape \(7, 2, 4\) requires batched input, "
     r"\(N, 4\), got unbatched input with shape \(4,\)$"),
    (lambda x, w, t: {"t": np.full((N, C), 1.0 / C), "ignore_index": 1}, ValueError,
     r"^ignore_index cannot be specified when target contains probabilities$"),
    (lambda x, w, t: {"reduction": "bad"}, ValueError, r"^bad is not a valid value for reduction$"),
    (lambda x, w, t: {"label_smoothing": 2.0}, ValueError,
     r"^label_smoothing must be between 0\.0 and 1\.0\. Got: 2\.0$"),
    (lambda x, w, t: {"t": t.astype(np.float64)}, TypeError,
     r"^expected target dtype to be Long or Byte, but got Double$"),
    (lambda x, w, t: {"t": np.where(t == -100, C, t)}, IndexError, r"^Target 7 is out of bounds\.$"),
    (lambda x, w, t: {"t": t[:3]}, ValueError,
     r"^Expected input batch_size \(9\) to match target batch_size \(3\)\.$"),
]


@pytest.mark.parametrize(("change", "error", "message"), ERRORS,
                         ids=[f"error-{i}" for i in range(len(ERRORS))])
@pytest.mark.parametrize("level", ["all", "none"])
def test_errors_have_torchs_wording(change, error, message, level):
    x, w, _, t, _ = _problem()
    kwargs = change(x, w, t)
    with anyloss.fast_paths(level), pytest.raises(error, match=message):
        _np_call(**kwargs)


def test_errors_match_torchs_own():
    """Each message above is torch's (as a RuntimeError there, a ValueError here)."""
    x, w, _, t, _ = _problem()
    for change, _, message in ERRORS[:7]:  # (torch prints label_smoothing=2.0 as "2")
        kwargs = change(x, w, t)
        args = {"x": x, "w": w, "t": t}
        for key in ("x", "w", "t"):
            if key in kwargs:
                args[key] = kwargs.pop(key)
        torch_kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                        for k, v in kwargs.items()}
        with pytest.raises((RuntimeError, ValueError), match=message):
            F.linear_cross_entropy(*[torch.from_numpy(args[k]) for k in ("x", "w", "t")],
                                   **torch_kwargs)


def test_unsupported_options_warn_as_torch_and_change_nothing():
    x, w, _, t, _ = _problem()
    options = anyloss.LinearCrossEntropyOptions()
    with pytest.warns(UserWarning, match=r"^linear_cross_entropy: ``options`` ignored"):
        got = anyloss.linear_cross_entropy(x, w, t, label_smoothing=0.1, options=options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = anyloss.linear_cross_entropy(x, w, t, label_smoothing=0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_options_check_as_torch_does():
    with pytest.raises(ValueError, match=r"^invalid acc_policy: 'fast'$"):
        anyloss.LinearCrossEntropyOptions(acc_policy="fast")
    with pytest.raises(ValueError, match=r"^invalid chunking_method: 'square'$"):
        anyloss.LinearCrossEntropyOptions(chunking_method="square")
    with pytest.raises(ValueError, match="batch_chunk_size must be positive int or None"):
        anyloss.LinearCrossEntropyOptions(batch_chunk_size=0)
    with pytest.raises(ValueError, match="acc_dtype must be one of"):
        anyloss.LinearCrossEntropyOptions(acc_dtype="int8")


@pytest.mark.parametrize("method", ["aspect_ratio", "aspect_ratio:2", "aspect_ratio:8"])
@pytest.mark.parametrize(("n", "d", "c"), [(4096, 1024, 32000), (100, 64, 1000), (7, 3, 2)])
def test_chunk_rule_is_torchs(method, n, d, c):
    ours = anyloss.LinearCrossEntropyOptions(chunking_method=method).rows_per_chunk(n, d, c)
    theirs = torch.nn.LinearCrossEntropyOptions(chunking_method=method)._adjust(
        num_batches=n, in_features=d, num_classes=c, dtype=torch.float32)
    assert ours == min(theirs.batch_chunk_size, n)


def test_torchs_options_are_accepted_on_torch():
    x, w, _, t, _ = _problem()
    tensors = [torch.from_numpy(a) for a in (x, w, t)]
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)
    got = anyloss.linear_cross_entropy(*tensors, options=options, reduction="none")
    expected = F.linear_cross_entropy(*tensors, options=options, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_jax_blocks_equal_torch_and_jit_grad_never_holds_the_logits(monkeypatch):
    """Many row blocks (the last one partial) give torch's values and gradients, and the
    compiled gradient's temporaries stay far below the (N, C) logits (XLA's own memory
    analysis of the compiled program)."""
    jax_ns = _ns("jax")
    import jax
    import jax.numpy as jnp

    from anyloss.backends import jax as jax_backend

    monkeypatch.setattr(jax_backend, "LINEAR_BLOCK_BYTES", 4 * 7 * 8)  # 4 rows of 7 classes
    x, w, b, t, cw = _problem(9)
    kwargs = {"linear_bias": b, "weight": cw, "label_smoothing": 0.2}
    expected, grads = _torch_loss_and_grads(x, w, t, kwargs)

    def loss_of(x, w, b, t, cw):
        return anyloss.linear_cross_entropy(x, w, t, linear_bias=b, weight=cw,
                                            label_smoothing=0.2)

    args = [jax_ns.from_numpy(a) for a in (x, w, b, t, cw)]
    value, got = jax.value_and_grad(loss_of, argnums=(0, 1, 2))(*args)
    assert_close(np.asarray(value), expected, **FLOAT64)
    for a, e in zip(got, grads, strict=True):
        assert_close(np.asarray(a), e, **FLOAT64)

    monkeypatch.setattr(jax_backend, "LINEAR_BLOCK_BYTES", 1 << 20)
    n, d, c = 2048, 64, 8000
    shapes = [jax.ShapeDtypeStruct(s, dt) for s, dt in
              (((n, d), jnp.float32), ((c, d), jnp.float32), ((n,), jnp.int64))]

    def mean_loss(x, w, t):
        return anyloss.linear_cross_entropy(x, w, t)

    compiled = jax.jit(jax.grad(mean_loss, argnums=(0, 1))).lower(*shapes).compile()
    temporaries = compiled.memory_analysis().temp_size_in_bytes
    assert temporaries < 0.1 * n * c * 4, temporaries


# --- the class -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "torch", "jax", "array_api_strict"])
@pytest.mark.parametrize("out_features", [(), (2,)])
def test_class_holds_a_layer_as_torchs_does(name, out_features):
    """Parameters created on the first call in the input's library, initialised in
    +-1/sqrt(in_features); with torch's layer set to the same values, torch's loss."""
    ns = _ns(name)
    g = np.random.default_rng(10)
    x = g.standard_normal((5, D))
    t = g.integers(0, C, (5, *out_features))
    loss = anyloss.LinearCrossEntropyLoss(D, C, out_features=out_features, bias=True,
                                          label_smoothing=0.1)
    assert repr(loss).startswith("LinearCrossEntropyLoss(in_features=4, num_classes=7")
    value = loss(ns.from_numpy(x), ns.from_numpy(t))
    w, b = (np.asarray(ns.to_numpy(a)) for a in (loss.linear_weight, loss.linear_bias))
    assert w.shape == (C * int(np.prod(out_features)), D) and b.shape == (w.shape[0],)
    assert np.all(np.abs(w) <= 1 / np.sqrt(D)) and np.std(w) > 0
    theirs = torch.nn.LinearCrossEntropyLoss(D, C, out_features=out_features, bias=True,
                                             label_smoothing=0.1, dtype=torch.float64)
    with torch.no_grad():
        theirs.linear.weight.copy_(torch.from_numpy(w))
        theirs.linear.bias.copy_(torch.from_numpy(b))
    expected = theirs(torch.from_numpy(x), torch.from_numpy(t)).detach().numpy()
    assert_close(ns.to_numpy(value), expected, **FLOAT64)


def test_class_checks_as_torch_does():
    with pytest.raises(ValueError, match=r"^expected weight shape to be \(7,\), got \(3,\)$"):
        anyloss.LinearCrossEntropyLoss(D, C, weight=np.ones(3))
    with pytest.raises(ValueError, match=r"^expected label_smoothing to be in range \[0, 1\]"):
        anyloss.LinearCrossEntropyLoss(D, C, label_smoothing=2)
