"""Gradients at the edges of each loss's domain equal torch's: clamps, ``eps``, the kinks of
``max(0, .)`` and ``abs`` at exactly 0, ``sqrt`` at 0 in the distances, infinite losses with
``zero_infinity``, ignored targets, probabilities of exactly 0 and 1.

Each edge is a small input built to sit on the edge, differentiated by torch autograd through
``torch.nn.functional`` (the oracle) and through anyloss, with fast paths on and off, and by
``jax.grad`` through anyloss. A weighting of the output that is not uniform makes every
element's gradient count; infinities and nans must sit where torch's are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from helpers import (
    FLOAT64,
    anyloss_jax_gradients,
    anyloss_torch_gradients,
    assert_close,
    torch_reference_gradients,
)

pytest.importorskip("torch")

ULP1 = 2.0 ** -53  # half an ulp of 1: 1 - ULP1 is the largest float64 below 1


@dataclass
class Edge:
    """One edge: the loss, its array arguments, options, and which arrays to differentiate.

    ``subnormal`` marks an edge whose inputs hold subnormal numbers: JAX on the CPU
    flushes those to zero (XLA's FTZ), so its gradient there is the one at 0, and the
    JAX test leaves the edge out.
    """

    id: str
    loss: str
    arrays: dict
    options: dict = field(default_factory=dict)
    differentiable: tuple = ("input",)
    subnormal: bool = False


def _f(*values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _i(*values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


_PROBABILITIES = _f(0.0, 1e-320, 1e-300, 1e-50, 0.3, 1 - ULP1, 1 - 2 * ULP1, 1.0, 0.0, 1.0)
_BCE_TARGETS = _f(0.0, 1.0, 1.0, 0.5, 0.2, 0.5, 0.0, 1.0, 1.0, 0.0)

EDGES = [
    # binary cross entropy: torch's hand-written gradients at and next to 0 and 1
    Edge("bce-input", "binary_cross_entropy",
         {"input": _PROBABILITIES, "target": _BCE_TARGETS}, subnormal=True),
    Edge("bce-input-and-target", "binary_cross_entropy",
         {"input": _PROBABILITIES, "target": _BCE_TARGETS}, differentiable=("input", "target"),
         subnormal=True),
    Edge("bce-input-and-target-normal", "binary_cross_entropy",
         {"input": _PROBABILITIES[_PROBABILITIES != 1e-320],
          "target": _BCE_TARGETS[_PROBABILITIES != 1e-320]},
         differentiable=("input", "target")),
    Edge("bce-weight-zero-at-edges", "binary_cross_entropy",
         {"input": _PROBABILITIES, "target": _BCE_TARGETS,
          "weight": _f(0.0, 1.0, 2.0, 0.5, 1.0, 1.5, 0.0, 1.0, 0.0, 0.0)},
         {"reduction": "sum"}, differentiable=("input", "target"), subnormal=True),
    Edge("bce-logits-extremes", "binary_cross_entropy_with_logits",
         {"input": _f(-800.0, -40.0, 0.0, 40.0, 800.0, 0.0),
          "target": _f(1.0, 0.0, 0.5, 1.0, 0.0, 1.0),
          "pos_weight": _f(2.0, 0.5, 1.0, 3.0, 1.0, 0.0)},
         differentiable=("input", "target")),
    # abs and max(0, .) at exactly 0
    Edge("l1-equal", "l1_loss", {"input": _f(1.0, -2.0, 0.0), "target": _f(1.0, -2.0, 0.5)},
         differentiable=("input", "target")),
    Edge("smooth_l1-beta0", "smooth_l1_loss",
         {"input": _f(1.0, -2.0, 0.0), "target": _f(1.0, -1.0, 0.5)}, {"beta": 0.0},
         differentiable=("input", "target")),
    Edge("smooth_l1-at-beta", "smooth_l1_loss",
         {"input": _f(1.0, -2.0, 0.0, 3.0), "target": _f(0.0, -1.5, 0.0, 3.0)}, {"beta": 1.0}),
    Edge("huber-at-delta", "huber_loss",
         {"input": _f(1.0, -2.0, 0.0, 3.0), "target": _f(0.0, -1.5, 0.0, 3.0)}, {"delta": 1.0}),
    Edge("hinge_embedding-at-margin", "hinge_embedding_loss",
         {"input": _f(1.0, 0.5, 2.0, 0.0), "target": _f(-1.0, -1.0, -1.0, 1.0)}),
    Edge("margin_ranking-at-kink", "margin_ranking_loss",
         {"input1": _f(1.0, 0.0, 2.0), "input2": _f(1.0, 0.5, 1.0), "target": _f(1.0, -1.0, 1.0)},
         {"margin": 0.0}, differentiable=("input1", "input2")),
    # (past |x| = 709 torch's exp(-y x) overflows: its loss is inf and its gradient nan,
    # where anyloss's loss stays finite; see the README)
    Edge("soft_margin-extremes", "soft_margin_loss",
         {"input": _f(-700.0, 0.0, 700.0, -30.0), "target": _f(1.0, -1.0, 1.0, -1.0)}),
    Edge("multi_margin-at-kink", "multi_margin_loss",
         {"input": _f(0.0, 1.0, 0.0, 1.0, 0.5, 0.5).reshape(2, 3), "target": _i(1, 0)}),
    Edge("multi_margin-p2-at-kink", "multi_margin_loss",
         {"input": _f(0.0, 1.0, 0.0, 1.0, 0.5, 0.5).reshape(2, 3), "target": _i(1, 0)},
         {"p": 2}),
    Edge("multilabel_margin-at-kink", "multilabel_margin_loss",
         {"input": _f(1.0, 0.0, 0.5, 0.0).reshape(1, 4), "target": _i(0, 2, -1, 1).reshape(1, 4)}),
    # distances: sqrt at 0, eps, the swap
    Edge("triplet-anchor-is-positive", "triplet_margin_loss",
         {"anchor": _f(1.0, 2.0, 1.0, 2.0).reshape(2, 2),
          "positive": _f(1.0, 2.0, 0.0, 0.0).reshape(2, 2),
          "negative": _f(1.0, 2.0, 5.0, 5.0).reshape(2, 2)},
         differentiable=("anchor", "positive", "negative")),
    Edge("triplet-swap-at-kink", "triplet_margin_loss",
         {"anchor": _f(0.0, 0.0, 1.0, 1.0).reshape(2, 2),
          "positive": _f(1.0, 0.0, 1.0, 1.0).reshape(2, 2),
          "negative": _f(2.0, 0.0, 1.0, 1.0).reshape(2, 2)},
         {"margin": 1.0, "swap": True}, differentiable=("anchor", "positive", "negative")),
    Edge("triplet-with-distance-zero", "triplet_margin_with_distance_loss",
         {"anchor": _f(1.0, 2.0, 1.0, 2.0).reshape(2, 2),
          "positive": _f(1.0, 2.0, 0.0, 0.0).reshape(2, 2),
          "negative": _f(1.0, 2.0, 5.0, 5.0).reshape(2, 2)},
         differentiable=("anchor", "positive", "negative")),
    Edge("cosine_embedding-zero-vector", "cosine_embedding_loss",
         {"input1": _f(0.0, 0.0, 1.0, 0.0, 1.0, 1.0).reshape(3, 2),
          "input2": _f(1.0, 0.0, 0.0, 0.0, 1.0, 1.0).reshape(3, 2),
          "target": _f(1.0, -1.0, -1.0)},
         differentiable=("input1", "input2")),
    # logarithms at 0: kl_div's xlogy, poisson's eps and Stirling term, gaussian's var clamp
    Edge("kl_div-target-zero", "kl_div",
         {"input": _f(-1.0, -2.0, 0.0, -800.0), "target": _f(0.0, 0.5, 0.0, 1.0)},
         {"reduction": "sum"}, differentiable=("input", "target"), subnormal=True),
    Edge("kl_div-log-target", "kl_div",
         {"input": _f(-1.0, -2.0, 0.0), "target": _f(-math.inf, -0.5, 0.0)},
         {"reduction": "sum", "log_target": True}, differentiable=("input", "target")),
    Edge("poisson-input-zero", "poisson_nll_loss",
         {"input": _f(0.0, 1e-300, 2.0), "target": _f(1.0, 0.0, 3.0)}, {"log_input": False},
         differentiable=("input", "target")),
    Edge("poisson-full-small-targets", "poisson_nll_loss",
         {"input": _f(0.0, 1.0, -1.0, 2.0), "target": _f(0.0, 1.0, 1.5, 7.0)}, {"full": True},
         differentiable=("input", "target")),
    Edge("gaussian-var-below-eps", "gaussian_nll_loss",
         {"input": _f(0.0, 1.0, 2.0), "target": _f(0.0, 1.5, 2.0), "var": _f(0.0, 1e-9, 1.0)},
         differentiable=("input", "target", "var")),
    # class indices: ignored targets, every target ignored, impossible classes
    Edge("nll-ignored", "nll_loss",
         {"input": _f(-1.0, -2.0, -3.0, -0.5, -1.5, -2.5).reshape(2, 3), "target": _i(1, -100)}),
    Edge("nll-all-ignored", "nll_loss",
         {"input": _f(-1.0, -2.0, -3.0, -0.5, -1.5, -2.5).reshape(2, 3), "target": _i(-100, -100)}),
    Edge("cross_entropy-all-ignored", "cross_entropy",
         {"input": _f(1.0, 2.0, 3.0, 0.5, 1.5, 2.5).reshape(2, 3), "target": _i(-100, -100)}),
    Edge("cross_entropy-minus-inf-logit", "cross_entropy",
         {"input": _f(-math.inf, 2.0, 3.0, 0.5, -math.inf, 2.5).reshape(2, 3), "target": _i(1, 2)},
         {"label_smoothing": 0.0}),
    Edge("cross_entropy-probabilities-with-zero", "cross_entropy",
         {"input": _f(1.0, 2.0, 3.0, 0.5, 1.5, 2.5).reshape(2, 3),
          "target": _f(0.0, 1.0, 0.0, 0.5, 0.5, 0.0).reshape(2, 3)},
         differentiable=("input", "target")),
    # CTC: an impossible alignment, with and without zero_infinity
    Edge("ctc-infeasible", "ctc_loss",
         {"log_probs": np.log(np.full((3, 2, 3), 1.0 / 3.0)),
          "targets": _i(1, 1, 1, 2, 0, 0).reshape(2, 3),
          "input_lengths": _i(3, 3), "target_lengths": _i(3, 1)},
         {"reduction": "none"}, differentiable=("log_probs",)),
    Edge("ctc-infeasible-zero_infinity", "ctc_loss",
         {"log_probs": np.log(np.full((3, 2, 3), 1.0 / 3.0)),
          "targets": _i(1, 1, 1, 2, 0, 0).reshape(2, 3),
          "input_lengths": _i(3, 3), "target_lengths": _i(3, 1)},
         {"zero_infinity": True}, differentiable=("log_probs",)),
]


#: The cotangent's seed: the weighting of each edge's output.
SEED = 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "generic"])
@pytest.mark.parametrize("edge", EDGES, ids=lambda e: e.id)
def test_torch_autograd_at_the_edge(edge, fast):
    expected = torch_reference_gradients(edge, SEED)
    got = anyloss_torch_gradients(edge, SEED, fast=fast)
    for name in edge.differentiable:
        assert_close(got[name], expected[name], **FLOAT64)


@pytest.mark.parametrize("edge", EDGES, ids=lambda e: e.id)
def test_jax_grad_at_the_edge(edge):
    if edge.subnormal:
        pytest.skip("JAX on the CPU flushes subnormal inputs to zero")
    got = anyloss_jax_gradients(edge, SEED)
    expected = torch_reference_gradients(edge, SEED)
    for name in edge.differentiable:
        assert_close(got[name], expected[name], **FLOAT64)


@pytest.mark.parametrize("pos_weight", [None, 0.5], ids=["no-pos_weight", "pos_weight"])
def test_logits_gradient_keeps_its_tail(pos_weight):
    """Far below 0, binary_cross_entropy_with_logits's gradient is sigmoid(x) ~ 1e-18 (torch's
    formula), not the 0 that the loss formula's own derivative cancels to: compared without
    an absolute tolerance, which would hide it."""
    x = _f(-40.0, -30.0, -700.0)
    y = np.zeros(3)
    edge = Edge("tail", "binary_cross_entropy_with_logits",
                {"input": x, "target": y}
                | ({} if pos_weight is None else {"pos_weight": np.full(3, pos_weight)}))
    want = torch_reference_gradients(edge, SEED)["input"]
    assert np.all(want[:2] > 0)
    got = anyloss_torch_gradients(edge, SEED)["input"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
