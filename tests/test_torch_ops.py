"""CPU torch tensors through anyloss's NumPy kernels, as ``torch.library`` custom operators.

The route (:mod:`anyloss.backends.torch_ops`, chosen in :mod:`anyloss.backends.torch`)
must give torch's numbers and gradients for every option, keep torch's and anyloss's
errors, step aside for what it does not take, and be a correct operator for autograd,
``torch.compile`` and ``torch.library.opcheck``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from helpers import FLOAT32, FLOAT64  # noqa: E402

import anyloss  # noqa: E402
from anyloss import _registry  # noqa: E402
from anyloss.backends.numpy import compiled  # noqa: E402

needs_numba = pytest.mark.skipif(not compiled.HAVE_NUMBA, reason="numba is not installed")
pytestmark = needs_numba


def _ops():
    from anyloss.backends import torch_ops

    return torch_ops


@pytest.fixture
def routed(monkeypatch):
    """How many calls reached the NumPy kernels through the operators."""
    ops = _ops()
    calls = {"cross_entropy": 0, "ctc_loss": 0}
    ce, ctc = ops._ce_numpy, ops._ctc_numpy

    def counting_ce(*args, **kwargs):
        calls["cross_entropy"] += 1
        return ce(*args, **kwargs)

    def counting_ctc(*args, **kwargs):
        calls["ctc_loss"] += 1
        return ctc(*args, **kwargs)

    monkeypatch.setattr(ops, "_ce_numpy", counting_ce)
    monkeypatch.setattr(ops, "_ctc_numpy", counting_ctc)
    return calls


def _close(actual, expected, dtype, loose=False):
    """Element by element within the dtype's tolerance (``loose``: float32 gradients of sums
    over tens of thousands of terms, where torch's own float32 rounding differs by a few
    1e-5)."""
    tol = FLOAT64 if dtype == torch.float64 else FLOAT32
    if loose and dtype == torch.float32:
        tol = {"rtol": 1e-4, "atol": 3e-5}
    torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=tol["atol"],
                               equal_nan=True)


# --- cross entropy -------------------------------------------------------------------------


def _ce_problem(shape, dtype, ignore=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype) * 3
    c = shape[0] if len(shape) == 1 else shape[1]
    tshape = () if len(shape) == 1 else (shape[0], *shape[2:])
    t = torch.randint(0, c, tshape, generator=g)
    if ignore and t.ndim:
        t.view(-1)[::5] = -100
    w = torch.rand(c, generator=g, dtype=dtype) + 0.5
    return x, t, w


CE_SHAPES = [(64, 600), (8, 40, 120), (40000,)]


def _routed_equals_torch(routed, x, target, weight, options):
    """``anyloss.cross_entropy`` on ``x`` through the operators against ``F.cross_entropy``:
    the forward without autograd (the loss-only operator), then forward and backward with a
    random cotangent (the fused operator), each reaching the NumPy kernels once. Returns
    torch's ``(loss, cotangent, leaf)`` of the second step, its gradient taken."""
    dtype = x.dtype
    out = anyloss.cross_entropy(x, target, weight, **options)
    assert routed["cross_entropy"] == 1
    _close(out, F.cross_entropy(x, target, weight, **options), dtype)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    loss = anyloss.cross_entropy(ours, target, weight, **options)
    assert "anyloss" in type(loss.grad_fn).__name__
    expected = F.cross_entropy(theirs, target, weight, **options)
    _close(loss, expected, dtype)
    cot = torch.rand(expected.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    loss.backward(cot)
    expected.backward(cot)
    assert routed["cross_entropy"] == 2
    _close(ours.grad, theirs.grad, dtype, loose=True)
    return expected, cot, theirs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_values_and_gradients_equal_torch(routed, dtype, shape, reduction,
                                                        weighted, smoothing):
    x, t, w = _ce_problem(shape, dtype)
    weight = w if weighted else None
    _routed_equals_torch(routed, x, t, weight, dict(reduction=reduction,
                                                    label_smoothing=smoothing))


def test_cross_entropy_other_ignore_index_and_all_ignored():
    x, t, _ = _ce_problem((64, 600), torch.float64, ignore=False)
    t[::3] = 7
    for target in (t, torch.full_like(t, 7)):
        for reduction in ("mean", "sum", "none"):
            ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            a = anyloss.cross_entropy(ours, target, ignore_index=7, reduction=reduction)
            b = F.cross_entropy(theirs, target, ignore_index=7, reduction=reduction)
            _close(a, b, torch.float64)
            a.sum().backward()
            b.sum().backward()
            _close(ours.grad, theirs.grad, torch.float64)


def test_cross_entropy_nonfinite_logits_as_torch():
    x, t, _ = _ce_problem((64, 600), torch.float64, ignore=False)
    x[0, 3] = float("inf")
    x[1, 4] = float("nan")
    x[2] = float("-inf")
    x[3, t[3]] = float("-inf")
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = anyloss.cross_entropy(ours, t, reduction="none")
    b = F.cross_entropy(theirs, t, reduction="none")
    _close(a, b, torch.float64)
    a.sum().backward()
    b.sum().backward()
    _close(ours.grad, theirs.grad, torch.float64)


def test_cross_entropy_and_grad_on_torch_tensors(routed):
    x, t, w = _ce_problem((8, 40, 120), torch.float64)
    for reduction in ("none", "mean", "sum"):
        loss, grad = anyloss.cross_entropy_and_grad(x, t, w, reduction=reduction,
                                                    label_smoothing=0.1)
        leaf = x.clone().requires_grad_(True)
        expected = F.cross_entropy(leaf, t, w, reduction=reduction, label_smoothing=0.1)
        expected.sum().backward()
        _close(loss, expected.detach(), torch.float64)
        _close(grad, leaf.grad, torch.float64)
    assert routed["cross_entropy"] == 3


def test_cross_entropy_retained_graph_backward_twice():
    x, t, _ = _ce_problem((64, 600), torch.float64)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a = anyloss.cross_entropy(ours, t, reduction="none")
    b = F.cross_entropy(theirs, t, reduction="none")
    cot = torch.linspace(0.5, 2.0, a.numel(), dtype=torch.float64)
    for _ in range(3):
        a.backward(cot, retain_graph=True)
        b.backward(cot, retain_graph=True)
        _close(ours.grad, theirs.grad, torch.float64)


def test_cross_entropy_double_backward_is_torchs():
    x, t, w = _ce_problem((64, 600), torch.float64)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(anyloss.cross_entropy(ours, t, w, label_smoothing=0.1), ours,
                                create_graph=True)
    (gb,) = torch.autograd.grad(F.cross_entropy(theirs, t, w, label_smoothing=0.1), theirs,
                                create_graph=True)
    _close(ga, gb, torch.float64)
    v = torch.randn_like(x)
    (ha,) = torch.autograd.grad((ga * v).sum(), ours)
    (hb,) = torch.autograd.grad((gb * v).sum(), theirs)
    _close(ha, hb, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cross_entropy_16_bit_routes_in_float32(routed, dtype):
    """16-bit CPU tensors reach the NumPy pass (float16 itself, converted there by compiled
    loops; bfloat16, which NumPy lacks, as its float32 copy): the loss and the autograd
    gradient are torch's float32 ones rounded once to the input's dtype."""
    x, t, w = _ce_problem((64, 600), torch.float32)
    x, w = x.to(dtype), w.to(dtype)
    ours = x.clone().requires_grad_(True)
    loss = anyloss.cross_entropy(ours, t, w, label_smoothing=0.1)
    loss.backward()
    assert routed["cross_entropy"] >= 1
    assert loss.dtype == ours.grad.dtype == dtype
    x32 = x.float().requires_grad_(True)
    expected = F.cross_entropy(x32, t, w.float(), label_smoothing=0.1)
    expected.backward()
    # The pass's float32 arithmetic is not torch's, so a result may round to the neighbour
    # of torch's rounded one: one ulp of the dtype is allowed.
    tol = torch.finfo(dtype).eps
    torch.testing.assert_close(loss, expected.to(dtype), rtol=tol, atol=0)
    torch.testing.assert_close(ours.grad.float(), x32.grad.to(dtype).float(), rtol=tol,
                               atol=tol * float(x32.grad.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cross_entropy_rows_apart_take_the_route(routed, dtype):
    """``logits[:, :V]`` of a wider tensor (columns adjacent, rows apart) routes to the NumPy
    pass as it is: forward, backward (the gradient lands in the wider tensor's slice, zero
    elsewhere), ``torch.compile`` of the slicing and the loss, and opcheck on the slice."""
    wide, _, _ = _ce_problem((64, 640), dtype)
    _, t, w = _ce_problem((64, 600), dtype)
    options = dict(reduction="mean", label_smoothing=0.1)
    out = anyloss.cross_entropy(wide[:, 3:603], t, w, **options)
    assert routed["cross_entropy"] == 1
    _close(out, F.cross_entropy(wide[:, 3:603], t, w, **options), dtype)
    ours, theirs = wide.clone().requires_grad_(True), wide.clone().requires_grad_(True)
    loss = anyloss.cross_entropy(ours[:, 3:603], t, w, **options)
    expected = F.cross_entropy(theirs[:, 3:603], t, w, **options)
    _close(loss, expected, dtype)
    loss.backward()
    expected.backward()
    assert routed["cross_entropy"] == 2
    _close(ours.grad, theirs.grad, dtype, loose=True)

    def step(x):
        return anyloss.cross_entropy(x[:, 3:603], t, w, **options)

    compiled_step = torch.compile(step, backend="aot_eager")
    leaf = wide.clone().requires_grad_(True)
    compiled_loss = compiled_step(leaf)
    compiled_loss.backward()
    assert routed["cross_entropy"] >= 3
    _close(compiled_loss, expected, dtype)
    _close(leaf.grad, theirs.grad, dtype, loose=True)
    torch.library.opcheck(torch.ops.anyloss.cross_entropy_fused,
                          (wide.clone().requires_grad_(True)[:, 3:603], t, w, -100, "sum", 0.1))
    torch.library.opcheck(torch.ops.anyloss.cross_entropy, (wide[:, 3:603], t, None, -100,
                                                            "none", 0.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cross_entropy_probabilities_take_the_route(routed, dtype, shape, reduction):
    """Class probabilities of (N, C), (N, C, d) and (C,) input route to the NumPy pass:
    forward and backward with a random cotangent equal torch's, weight and smoothing
    included; the fake implementation gives the losses' shape (opcheck), and
    ``torch.compile`` eager's."""
    x, _, w = _ce_problem(shape, dtype)
    g = torch.Generator().manual_seed(2)
    classes = 0 if len(shape) == 1 else 1
    target = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), classes)
    options = dict(reduction=reduction, label_smoothing=0.1)
    expected, cot, theirs = _routed_equals_torch(routed, x, target, w, options)
    for op, leaf in ((torch.ops.anyloss.cross_entropy, x),
                     (torch.ops.anyloss.cross_entropy_fused, x.clone().requires_grad_(True))):
        torch.library.opcheck(op, (leaf, target, w, -100, reduction, 0.1))
    compiled_loss = torch.compile(lambda x: anyloss.cross_entropy(x, target, w, **options),
                                  backend="aot_eager")
    leaf = x.clone().requires_grad_(True)
    got = compiled_loss(leaf)
    _close(got, expected, dtype)
    got.backward(cot)
    _close(leaf.grad, theirs.grad, dtype, loose=True)


def test_cross_entropy_probabilities_that_take_a_gradient_keep_torch(routed):
    """A target of probabilities that requires grad (distillation through the teacher) stays
    with torch, whose autograd gives its gradient too; so does a non-negative
    ``ignore_index`` (torch's error)."""
    x, _, _ = _ce_problem((64, 600), torch.float64)
    target = torch.softmax(torch.randn(64, 600, dtype=torch.float64), 1).requires_grad_(True)
    loss = anyloss.cross_entropy(x, target)
    assert routed["cross_entropy"] == 0
    loss.backward()
    reference = target.detach().clone().requires_grad_(True)
    F.cross_entropy(x, reference).backward()
    torch.testing.assert_close(target.grad, reference.grad)
    with pytest.raises(ValueError, match="ignore_index is not supported for floating point"):
        anyloss.cross_entropy(x, target.detach(), ignore_index=3)
    assert routed["cross_entropy"] == 0


@pytest.mark.parametrize("variant", ["non-contiguous", "small", "transposed probabilities"])
def test_cross_entropy_route_steps_aside(routed, variant):
    x, t, _ = _ce_problem((64, 600), torch.float64)
    weight, target = None, t
    if variant == "non-contiguous":
        x = x.t().contiguous().t()
    elif variant == "small":
        x, target = x[:4, :10], torch.randint(0, 10, (4,))
    else:
        target = torch.softmax(torch.randn_like(x), 1).t().contiguous().t()
    out = anyloss.cross_entropy(x, target, weight)
    assert routed["cross_entropy"] == 0
    expected = F.cross_entropy(x.double(), target.double() if target.is_floating_point()
                               else target, None if weight is None else weight.detach())
    torch.testing.assert_close(out.double(), expected, rtol=1e-12, atol=1e-12)


def test_cross_entropy_errors_unchanged(routed):
    x, t, _ = _ce_problem((64, 600), torch.float64, ignore=False)
    t[5] = 600
    with pytest.raises(IndexError, match=r"^Target 600 is out of bounds\.$"):
        anyloss.cross_entropy(x, t)
    with pytest.raises(ValueError, match="Expected input batch_size"):
        anyloss.cross_entropy(x, t[:10])
    assert routed["cross_entropy"] == 0
    # the operator itself (as torch.compile runs it) raises torch's error
    with pytest.raises(IndexError, match=r"^Target 600 is out of bounds\.$"):
        torch.ops.anyloss.cross_entropy(x, t, None, -100, "mean", 0.0)


def test_functorch_transforms_step_aside(routed):
    x, t, w = _ce_problem((64, 600), torch.float64)

    def loss(v):
        return anyloss.cross_entropy(v, t, w, label_smoothing=0.1)

    grad = torch.func.grad(loss)(x)
    leaf = x.clone().requires_grad_(True)
    F.cross_entropy(leaf, t, w, label_smoothing=0.1).backward()
    _close(grad, leaf.grad, torch.float64)
    rows = torch.func.vmap(lambda v, y: anyloss.cross_entropy(v, y, reduction="sum"))(
        x.reshape(4, 16, 600), t.reshape(4, 16))
    _close(rows, F.cross_entropy(x, t, reduction="none").reshape(4, 16).sum(1),
           torch.float64)
    assert routed["cross_entropy"] == 0


def test_without_numba_the_route_steps_aside(monkeypatch, routed):
    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)
    _registry._clear_caches()
    try:
        x, t, _ = _ce_problem((64, 600), torch.float64)
        _close(anyloss.cross_entropy(x, t), F.cross_entropy(x, t), torch.float64)
        lp, targets, il, tl = _ctc_problem(torch.float64)
        _close(anyloss.ctc_loss(lp, targets, il, tl),
               F.ctc_loss(lp, targets, il, tl), torch.float64)
        assert routed == {"cross_entropy": 0, "ctc_loss": 0}
    finally:
        _registry._clear_caches()


def test_threads_setting_gives_the_same_numbers():
    x, t, _ = _ce_problem((256, 600), torch.float32)
    with anyloss.threads(1):
        one = anyloss.cross_entropy(x, t, reduction="none")
    with anyloss.threads(2):
        two = anyloss.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(two, one, rtol=0, atol=0)
    _close(one, F.cross_entropy(x, t, reduction="none"), torch.float32)


# --- CTC -----------------------------------------------------------------------------------


def _ctc_problem(dtype, T=30, N=4, C=7, S=8, seed=0, short=False):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(T, N, C, generator=g, dtype=dtype).log_softmax(2)
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.tensor([T, T - 3, T - 7, 5][:N] if short else [T, T - 3, T - 7, T - 1][:N])
    tl = torch.tensor([S, S - 2, 0, 3][:N])
    return lp, targets, il, tl


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("layout", ["padded", "concatenated", "transposed"])
def test_ctc_values_and_gradients_equal_torch(routed, dtype, reduction, zero_infinity, layout):
    lp, targets, il, tl = _ctc_problem(dtype, short=True)  # sample 3: impossible alignment
    if layout == "concatenated":
        targets = torch.cat([targets[i, :tl[i]] for i in range(len(tl))])
    elif layout == "transposed":
        lp = lp.transpose(0, 1).contiguous().transpose(0, 1)  # (T, N, C) of strides (C, T*C, 1)
    options = dict(reduction=reduction, zero_infinity=zero_infinity)
    out = anyloss.ctc_loss(lp, targets, il, tl, **options)
    assert routed["ctc_loss"] == 1
    _close(out, F.ctc_loss(lp, targets, il, tl, **options), dtype)
    ours = lp.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    theirs = lp.detach().clone().requires_grad_(True)
    assert ours.stride() == lp.stride()
    a = anyloss.ctc_loss(ours, targets, il, tl, **options)
    b = F.ctc_loss(theirs, targets, il, tl, **options)
    cot = torch.rand(b.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    a.backward(cot)
    b.backward(cot)
    assert routed["ctc_loss"] == 2
    _close(ours.grad, theirs.grad, dtype, loose=True)


def test_ctc_double_backward_raises_torchs_error():
    lp, targets, il, tl = _ctc_problem(torch.float64)
    leaf = lp.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(anyloss.ctc_loss(leaf, targets, il, tl), leaf, create_graph=True)
    leaf_t = lp.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(F.ctc_loss(leaf_t, targets, il, tl), leaf_t, create_graph=True)
    _close(g, gt, torch.float64)
    with pytest.raises(RuntimeError) as theirs:
        torch.autograd.grad(gt.sum(), leaf_t)
    with pytest.raises(RuntimeError) as ours:
        torch.autograd.grad(g.sum(), leaf)
    assert str(ours.value) == str(theirs.value)


def test_ctc_errors_unchanged(routed):
    lp, targets, il, tl = _ctc_problem(torch.float64)
    with pytest.raises(ValueError):
        anyloss.ctc_loss(lp, targets, il + 1, tl)
    assert routed["ctc_loss"] == 0


def test_ctc_and_grad_on_torch_tensors(routed):
    lp, targets, il, tl = _ctc_problem(torch.float64)
    losses, grad = anyloss.ctc_loss_and_grad(lp, targets, il, tl, reduction="none")
    leaf = lp.clone().requires_grad_(True)
    expected = F.ctc_loss(leaf, targets, il, tl, reduction="none")
    expected.sum().backward()
    _close(losses, expected.detach(), torch.float64)
    _close(grad, leaf.grad, torch.float64)
    assert routed["ctc_loss"] == 1


# --- the operators -------------------------------------------------------------------------


def test_opcheck_every_operator():
    _ops()
    x, t, w = _ce_problem((8, 40, 120), torch.float64)
    lp, targets, il, tl = _ctc_problem(torch.float64)
    cases = [
        (torch.ops.anyloss.cross_entropy, (x, t, w, -100, "mean", 0.1)),
        (torch.ops.anyloss.cross_entropy, (x, t, None, -100, "none", 0.0)),
        (torch.ops.anyloss.cross_entropy_fused,
         (x.clone().requires_grad_(True), t, w, -100, "sum", 0.1)),
        (torch.ops.anyloss.cross_entropy_fused,
         (x.clone().requires_grad_(True), t, None, -100, "none", 0.0)),
        (torch.ops.anyloss.ctc_loss, (lp, targets, il, tl, 0, False, 8)),
        (torch.ops.anyloss.ctc_loss_fused,
         (lp.clone().requires_grad_(True), targets, il, tl, 0, True, 8)),
    ]
    xs, ws, bs, ts, cws = _lce_problem(torch.float64)
    cases += [
        (torch.ops.anyloss.linear_cross_entropy_fused,
         (xs.clone().requires_grad_(True), ws.clone().requires_grad_(True), ts,
          bs.clone().requires_grad_(True), cws, "mean", 3, 0.1)),
        (torch.ops.anyloss.linear_cross_entropy_fused,
         (xs, ws.clone().requires_grad_(True), ts, None, None, "sum", -100, 0.0)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_of_the_operators_equals_eager():
    """The operators under ``torch.compile(fullgraph=True)`` give eager's numbers.

    Forward and backward, the operators alone (tests/test_compile.py compiles the public
    functions).
    """
    ops = _ops()
    x, t, w = _ce_problem((64, 600), torch.float32)
    lp, targets, il, tl = _ctc_problem(torch.float32)

    def step(x, lp):
        ce = ops.cross_entropy(x, t, w, ignore_index=-100, reduction="mean",
                               label_smoothing=0.1)
        ctc = ops.ctc_loss(lp, targets, il, tl, blank=0, zero_infinity=False,
                           max_target_length=8)
        return ce + ctc.sum()

    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [x.clone().requires_grad_(True), lp.clone().requires_grad_(True)]
    eager = [x.clone().requires_grad_(True), lp.clone().requires_grad_(True)]
    out = compiled_step(*leaves)
    expected = step(*eager)
    torch.testing.assert_close(out, expected)
    out.backward()
    expected.backward()
    for a, b in zip(leaves, eager, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    with torch.no_grad():
        torch.testing.assert_close(compiled_step(x, lp), step(x, lp))


def test_operators_are_defined_lazily_on_first_use():
    import subprocess
    import sys

    code = (
        "import torch, anyloss\n"
        "x = torch.zeros(2, 3); t = torch.zeros(2, dtype=torch.int64)\n"
        "anyloss.cross_entropy(x, t)\n"  # small: torch's kernel, no operator needed
        "print(hasattr(torch.ops.anyloss, 'cross_entropy'))\n"
        "anyloss.cross_entropy(torch.zeros(64, 600), torch.zeros(64, dtype=torch.int64))\n"
        "print(hasattr(torch.ops.anyloss, 'cross_entropy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_cross_entropy_forward_without_grad_by_the_numpy_kernel(monkeypatch, dtype):
    from anyloss.backends.numpy import linear_cross_entropy as kernels

    calls = []
    original = kernels.linear_cross_entropy
    monkeypatch.setattr(kernels, "linear_cross_entropy",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, generator=g, dtype=dtype)
    w = torch.randn(50, 16, generator=g, dtype=dtype)
    b = torch.randn(50, generator=g, dtype=dtype)
    cw = torch.rand(50, generator=g, dtype=dtype)
    t = torch.randint(0, 50, (32,), generator=g)
    t[::4] = -100
    for reduction in ("none", "mean", "sum"):
        options = dict(linear_bias=b, weight=cw, reduction=reduction, label_smoothing=0.1)
        _close(anyloss.linear_cross_entropy(x, w, t, **options),
               F.linear_cross_entropy(x, w, t, **options), dtype)
    assert len(calls) == 3
    with torch.no_grad():  # parameters that require grad, autograd off: the kernel
        _close(anyloss.linear_cross_entropy(x.requires_grad_(True), w, t, linear_bias=b),
               F.linear_cross_entropy(x, w, t, linear_bias=b), dtype)
    assert len(calls) == 4
    leaf = w.detach().clone().requires_grad_(True)  # autograd recording: the fused operator
    loss = anyloss.linear_cross_entropy(x.detach(), leaf, t, linear_bias=b)
    assert len(calls) == 4 and "linear_cross_entropy_fused" in type(loss.grad_fn).__name__


# --- linear cross entropy with autograd: the fused operator ---------------------------------


@pytest.fixture
def fused_calls(monkeypatch):
    """How many calls ran the fused operator's NumPy kernel."""
    ops = _ops()
    calls = []
    original = ops._lce_numpy
    monkeypatch.setattr(ops, "_lce_numpy", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def _lce_problem(dtype, bias=True, seed=0, n=37, d=16, c=50):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    b = torch.randn(c, generator=g, dtype=dtype) if bias else None
    t = torch.randint(0, c, (n,), generator=g)
    t[::6] = 3
    cw = torch.rand(c, generator=g, dtype=dtype) + 0.5
    return x, w, b, t, cw


def _lce_grads(loss_fn, x, w, b, t, scale=1.7, **options):
    leaves = [a.detach().clone().requires_grad_(True) for a in (x, w, *(() if b is None else (b,)))]
    loss = loss_fn(leaves[0], leaves[1], t, linear_bias=leaves[2] if b is not None else None,
                   **options)
    (loss * scale).sum().backward()
    return [loss.detach(), *(a.grad for a in leaves)], loss


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("options", ["plain", "weight+smoothing+ignore"])
def test_linear_cross_entropy_autograd_by_the_fused_operator(fused_calls, dtype, reduction,
                                                             bias, options):
    """Loss and the gradients wrt input, weight and bias equal torch's, from one kernel call
    (the backward uses the gradients the forward computed)."""
    x, w, b, t, cw = _lce_problem(dtype, bias)
    extra = {} if options == "plain" else dict(weight=cw, label_smoothing=0.1, ignore_index=3)
    ours, loss = _lce_grads(anyloss.linear_cross_entropy, x, w, b, t, reduction=reduction,
                            **extra)
    expected, _ = _lce_grads(F.linear_cross_entropy, x, w, b, t, reduction=reduction, **extra)
    assert "linear_cross_entropy_fused" in type(loss.grad_fn).__name__
    assert len(fused_calls) == 1
    if dtype == torch.float64:
        for a, e in zip(ours, expected, strict=True):
            _close(a, e, dtype)
        return
    # float32: torch's own float32 result is a few 1e-6 off the exact one here (sums of 50
    # exponentials, then products over 37 rows); anyloss's must be as close to torch's
    # float64 result on the same inputs, within twice torch's error (and 1e-7).
    double = [None if a is None else a.double() for a in (x, w, b, cw)]
    extra64 = {**extra, "weight": double[3]} if "weight" in extra else extra
    exact, _ = _lce_grads(F.linear_cross_entropy, double[0], double[1], double[2], t,
                          reduction=reduction, **extra64)
    for a, e, r in zip(ours, expected, exact, strict=True):
        torch_error = float((e.double() - r).abs().max())
        assert float((a.double() - r).abs().max()) <= 2 * torch_error + 1e-7


def test_linear_cross_entropy_and_grad_on_torch_tensors_uses_the_fused_operator(fused_calls):
    x, w, b, t, _ = _lce_problem(torch.float64)
    loss, gx, gw, gb = anyloss.linear_cross_entropy_and_grad(x, w, t, linear_bias=b)
    expected, _ = _lce_grads(F.linear_cross_entropy, x, w, b, t, scale=1.0)
    assert len(fused_calls) == 1
    for a, e in zip([loss, gx, gw, gb], expected, strict=True):
        _close(a, e, torch.float64)


@pytest.mark.parametrize("variant", ["none", "chunked options", "frozen weight", "1-d input"])
def test_linear_cross_entropy_fused_route_steps_aside(fused_calls, variant):
    """'none' (each row's own grad_output reaches the weight gradient), torch's chunked
    options and a weight that takes no gradient keep torch's path; a single (D,) sample
    takes the operator."""
    x, w, b, t, _ = _lce_problem(torch.float64)
    options: dict = {}
    expected_options: dict = {}
    if variant == "none":
        options["reduction"] = expected_options["reduction"] = "none"
    elif variant == "chunked options":
        options["options"] = anyloss.LinearCrossEntropyOptions(batch_chunk_size=8)
        expected_options["options"] = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=8)
    elif variant == "1-d input":
        x, t = x[0], t[0]
    if variant == "frozen weight":
        leaf = x.clone().requires_grad_(True)
        loss = anyloss.linear_cross_entropy(leaf, w, t, linear_bias=b)
        (g,) = torch.autograd.grad(loss, leaf)
        ref = x.clone().requires_grad_(True)
        expected = [F.linear_cross_entropy(ref, w, t, linear_bias=b)]
        expected += torch.autograd.grad(expected[0], ref)
        assert not fused_calls
        for a, e in zip([loss, g], expected, strict=True):
            _close(a.detach(), e.detach(), torch.float64)
        return
    ours, _ = _lce_grads(anyloss.linear_cross_entropy, x, w, b, t, **options)
    expected, _ = _lce_grads(F.linear_cross_entropy, x, w, b, t, **expected_options)
    assert len(fused_calls) == (1 if variant == "1-d input" else 0)
    for a, e in zip(ours, expected, strict=True):
        _close(a, e, torch.float64)


def test_linear_cross_entropy_fused_edges_as_torch(fused_calls):
    """A non-finite logit gives torch's answer (the fused node dropped), a retained graph
    backs up twice (the second time recomputed), double backward is torch's, and a bad
    class index raises torch's error."""
    x, w, b, t, _ = _lce_problem(torch.float64)
    bad = x.clone()
    bad[2, 0] = float("inf")
    ours, _ = _lce_grads(anyloss.linear_cross_entropy, bad, w, b, t)
    expected, _ = _lce_grads(F.linear_cross_entropy, bad, w, b, t)
    for a, e in zip(ours, expected, strict=True):
        _close(a, e, torch.float64)

    leaf = w.clone().requires_grad_(True)
    loss = anyloss.linear_cross_entropy(x, leaf, t, linear_bias=b)
    loss.backward(retain_graph=True)
    first = leaf.grad.clone()
    loss.backward()
    _close(leaf.grad, 2 * first, torch.float64)

    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(anyloss.linear_cross_entropy(leaf, w, t), leaf, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), leaf)
    ref = x.clone().requires_grad_(True)
    (h,) = torch.autograd.grad(F.linear_cross_entropy(ref, w, t), ref, create_graph=True)
    (hh,) = torch.autograd.grad(h.square().sum(), ref)
    _close(gg, hh, torch.float64)

    with pytest.raises(IndexError, match=r"^Target 50 is out of bounds\.$"):
        _ops().linear_cross_entropy(x.clone().requires_grad_(True), w, torch.full_like(t, 50),
                                    linear_bias=None, weight=None, reduction="mean",
                                    ignore_index=-100, label_smoothing=0.0)


def test_linear_cross_entropy_fused_under_torch_compile_equals_eager():
    ops = _ops()
    x, w, b, t, cw = _lce_problem(torch.float32)

    def step(x, w, b):
        return ops.linear_cross_entropy(x, w, t, linear_bias=b, weight=cw, reduction="mean",
                                        ignore_index=3, label_smoothing=0.1)

    compiled_step = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [a.clone().requires_grad_(True) for a in (x, w, b)]
    eager = [a.clone().requires_grad_(True) for a in (x, w, b)]
    out, expected = compiled_step(*leaves), step(*eager)
    torch.testing.assert_close(out, expected)
    out.backward()
    expected.backward()
    for a, e in zip(leaves, eager, strict=True):
        torch.testing.assert_close(a.grad, e.grad)


def test_gradients_of_the_fused_operators_are_plain_tensors():
    """The gradient ``torch.autograd.grad`` returns through a fused operator is a tensor
    that does not itself require grad (it is the node's output, kept detached): it was
    one that did, with a grad_fn pointing back at the node."""
    x, t, w = _ce_problem((64, 600), torch.float64)
    lp, targets, il, tl = _ctc_problem(torch.float64)
    xs, ws, bs, ts, _ = _lce_problem(torch.float64)
    leaf = x.clone().requires_grad_(True)
    grads = list(torch.autograd.grad(anyloss.cross_entropy(leaf, t, w), leaf))
    leaf = lp.clone().requires_grad_(True)
    grads += torch.autograd.grad(anyloss.ctc_loss(leaf, targets, il, tl), leaf)
    leaves = [a.clone().requires_grad_(True) for a in (xs, ws, bs)]
    grads += torch.autograd.grad(anyloss.linear_cross_entropy(leaves[0], leaves[1], ts,
                                                              linear_bias=leaves[2]), leaves)
    assert len(grads) == 5
    for g in grads:
        assert not g.requires_grad and g.grad_fn is None
