"""Float64 parity of the blocked evaluation of reduced losses on large arrays.

``anyloss._blocked.reduce_blockwise`` evaluates ``'sum'`` and ``'mean'`` of large
eager NumPy and CPU torch arrays in row blocks; the catalogue's small arrays
never reach it. These 1024×1024 cases do, on both libraries, against
``torch.nn.functional`` at rtol 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import call_quietly, torch_oracle

import anyloss

torch = pytest.importorskip("torch")

N, D, C = 1024, 1024, 64


def _cases():
    g = np.random.default_rng(1)
    x, y, z = g.standard_normal((N, D)), 2 * g.standard_normal((N, D)), g.standard_normal((N, D))
    signs = np.where(g.random((N, D)) < 0.5, -1.0, 1.0)
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    p = np.exp(g.standard_normal((N, D)))
    p /= p.sum(1, keepdims=True)
    unit = g.uniform(0.001, 0.999, (N, D))
    cls = g.integers(0, D, N)
    w, pw = g.uniform(0.5, 2, D), g.uniform(0.5, 2, D)
    multi_x = g.standard_normal((N, C))
    multi_t = np.argsort(g.random((N, C)), 1)
    multi_t = np.where(np.arange(C) < g.integers(0, 9, (N, 1)), multi_t, -1)
    bits = (g.random((N, D)) < 0.5) * 1.0
    counts = np.floor(np.exp(y))
    return [
        ("l1_loss", {"input": x, "target": y}, {}),
        ("mse_loss", {"input": x, "target": y}, {}),
        ("huber_loss", {"input": x, "target": y}, {"delta": 0.7}),
        ("smooth_l1_loss", {"input": x, "target": y}, {"beta": 0.5}),
        ("smooth_l1_loss", {"input": x, "target": y}, {"beta": 0.0}),
        ("soft_margin_loss", {"input": x, "target": signs}, {}),
        ("hinge_embedding_loss", {"input": x, "target": signs}, {"margin": 0.5}),
        ("margin_ranking_loss", {"input1": x, "input2": y, "target": signs}, {"margin": 0.2}),
        ("multilabel_soft_margin_loss", {"input": x, "target": bits}, {}),
        ("multilabel_soft_margin_loss", {"input": x, "target": bits, "weight": w}, {}),
        ("multilabel_margin_loss", {"input": multi_x, "target": multi_t}, {}),
        ("multi_margin_loss", {"input": x, "target": cls}, {}),
        ("multi_margin_loss", {"input": x, "target": cls, "weight": w}, {"p": 2, "margin": 0.5}),
        ("kl_div", {"input": lp, "target": p}, {"reduction": "batchmean"}),
        ("kl_div", {"input": lp, "target": np.log(p)}, {"log_target": True}),
        ("kl_div", {"input": lp, "target": np.where(p > 1e-4, p, 0.0)}, {}),
        ("poisson_nll_loss", {"input": x, "target": counts}, {}),
        ("poisson_nll_loss", {"input": np.exp(x), "target": counts}, {"log_input": False, "full": True}),
        ("gaussian_nll_loss", {"input": x, "target": y, "var": unit}, {}),
        ("gaussian_nll_loss", {"input": x, "target": y, "var": unit[:, :1]}, {"full": True, "eps": 0.01}),
        ("gaussian_nll_loss", {"input": x, "target": y, "var": unit[:, 0]}, {}),
        ("cosine_embedding_loss", {"input1": x, "input2": y, "target": signs[:, 0]}, {"margin": 0.1}),
        ("triplet_margin_loss", {"anchor": x, "positive": y, "negative": z}, {}),
        ("triplet_margin_loss", {"anchor": x, "positive": y, "negative": z}, {"p": 1.0, "swap": True}),
        ("triplet_margin_with_distance_loss", {"anchor": x, "positive": y, "negative": z}, {}),
        ("nll_loss", {"input": lp, "target": cls}, {}),
        ("nll_loss", {"input": lp, "target": cls, "weight": w}, {}),
        ("cross_entropy", {"input": x, "target": cls, "weight": w}, {"label_smoothing": 0.1}),
        ("binary_cross_entropy", {"input": unit, "target": bits}, {}),
        ("binary_cross_entropy", {"input": unit, "target": g.random((N, D)), "weight": w}, {}),
        ("binary_cross_entropy_with_logits", {"input": x, "target": g.random((N, D))}, {}),
        ("binary_cross_entropy_with_logits", {"input": 20 * x, "target": g.random((N, D)), "weight": w},
         {"pos_weight": pw}),
    ]


CASES = _cases()


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=lambda i: f"{CASES[i][0]}-{i}")
def test_blocked_reduction_matches_torch(index, reduction, library):
    loss, arrays, options = CASES[index]
    options = {"reduction": reduction, **options}
    pos_weight = options.pop("pos_weight", None)
    if pos_weight is not None:
        arrays = {**arrays, "pos_weight": pos_weight}
    expected, _ = torch_oracle(loss, arrays, options)
    inputs = arrays if library == "numpy" else {
        k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
    actual = call_quietly(getattr(anyloss, loss), **inputs, **options)
    np.testing.assert_allclose(float(actual), expected.item(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_these_sizes_take_the_blocked_path(library):
    """The cases above are large enough to be cut into row blocks (else they test nothing new)."""
    import array_api_compat

    from anyloss import _blocked

    x = np.zeros((N, D))
    if library == "torch":
        x = torch.from_numpy(x)
    plan = _blocked._block_plan(array_api_compat.array_namespace(x), [x, x], None, None)
    assert plan is not None and plan[2] < N  # rows per block: several blocks
