"""Cases at the edges of floating point, where a subtly wrong array library shows.

Three kinds, all for the losses computed element by element (their references are
those of the family modules):

- **accuracy**: arguments where ``log1p``, ``expm1``, ``logaddexp``, ``exp`` and
  ``log`` differ from their naive forms: probabilities within 1e-12 of 0 and 1,
  the far tails of softplus (``log(1 + e^x)`` for ``|x|`` up to 800), subnormal
  targets and variances, tiny and huge differences;
- **specials**: nan, +inf, -inf and both zeros in each float argument; the
  result has nan, inf and signed zeros exactly where torch's has them (the
  tests check each reference against torch itself);
- **large reductions**: sums and means of 10^6 terms, where an accumulation
  that adds one term at a time in the working precision loses digits (float32)
  or overflows (float16 without float32 accumulation).

No case here is differentiated: the gradient at nan and inf is not what they test.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .catalogue import REDUCTIONS, Case, register_cases, rng

NAN, INF = float("nan"), float("inf")

#: Every special value, each with an ordinary partner in the other argument.
SPECIALS = np.asarray([NAN, INF, -INF, 0.0, -0.0, 1.5, -2.0])
ORDINARY = np.asarray([0.5, -1.0, 2.0, -0.0, 0.0, 0.25, 1.0])

_WIDE = ("float64", "float32")

#: A mean puts nan and inf where the sum does: the special values run unreduced and summed.
_SPECIAL_REDUCTIONS = ("none", "sum")
_FLOAT64 = ("float64",)

#: Elements of the large reductions.
LARGE = 10**6


def _special_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(first, second) argument pairs with the specials in one, then the other, then both."""
    return {
        "specials-in-first": (SPECIALS, ORDINARY),
        "specials-in-second": (ORDINARY, SPECIALS),
        "specials-in-both": (SPECIALS, SPECIALS[::-1].copy()),
    }


def _unlabelled(label: str, loss: str, arrays: dict, options: dict, dtypes=_WIDE) -> Case:
    return Case(loss, arrays, options, label=label, differentiable=(), dtypes=dtypes)


@register_cases
def special_value_cases() -> Iterator[Case]:
    """nan, +-inf and signed zeros in every float argument of the elementwise losses."""
    signs = np.asarray([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
    for label, (first, second) in _special_pairs().items():
        for reduction in _SPECIAL_REDUCTIONS:
            options = {"reduction": reduction}
            for loss in ("l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss"):
                yield _unlabelled(label, loss, {"input": first, "target": second}, options)
            yield _unlabelled(label, "margin_ranking_loss",
                              {"input1": first, "input2": second, "target": signs}, options)
            yield _unlabelled(label, "kl_div", {"input": first, "target": np.abs(second)},
                              options)
            yield _unlabelled(label, "kl_div", {"input": first, "target": second},
                              {**options, "log_target": True})
            yield _unlabelled(label, "poisson_nll_loss", {"input": first, "target": second},
                              options)
            yield _unlabelled(label, "gaussian_nll_loss",
                              {"input": first, "target": second, "var": np.abs(first) + 0.5},
                              options)
    for reduction in _SPECIAL_REDUCTIONS:
        options = {"reduction": reduction}
        yield _unlabelled("specials", "soft_margin_loss", {"input": SPECIALS, "target": signs},
                          options)
        yield _unlabelled("specials", "hinge_embedding_loss",
                          {"input": SPECIALS, "target": signs.astype(np.int64)}, options)
        yield _unlabelled("specials", "binary_cross_entropy_with_logits",
                          {"input": SPECIALS, "target": np.abs(ORDINARY) / 2}, options)
        yield _unlabelled("specials-target", "binary_cross_entropy_with_logits",
                          {"input": ORDINARY, "target": SPECIALS}, options)
        yield _unlabelled("threshold-not-in-float32", "huber_loss",
                          {"input": ORDINARY, "target": ORDINARY[::-1].copy()},
                          {**options, "delta": 0.3})
        yield _unlabelled("threshold-not-in-float32", "smooth_l1_loss",
                          {"input": ORDINARY, "target": ORDINARY[::-1].copy()},
                          {**options, "beta": 0.3})
        for swap in (False, True):
            anchor = np.zeros((4, 3))
            positive = np.asarray([[NAN, 0, 0], [1, 2, 0], [INF, 0, 0], [0.5, 0, 0]])
            negative = np.asarray([[1, 1, 0], [NAN, 0, 0], [0, 1, 0], [-INF, 0, 0]])
            yield _unlabelled("specials", "triplet_margin_loss",
                              {"anchor": anchor, "positive": positive, "negative": negative},
                              {**options, "swap": swap})
        yield _unlabelled("specials-var", "gaussian_nll_loss",
                          {"input": ORDINARY, "target": ORDINARY[::-1].copy(),
                           "var": np.asarray([NAN, INF, 0.0, -0.0, 1e-8, 2.0, 0.5])}, options)


#: Probabilities within 1e-12 of 0 and 1 (and exactly 0 and 1), with the targets that make
#: ``log1p(-p)`` or ``log(p)`` the whole loss.
_PROBABILITIES = np.asarray([1e-10, 1e-12, 1e-300, 0.0, 1 - 1e-12, 1 - 1e-10, 1.0, 0.5])
_PROBABILITY_TARGETS = np.asarray([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1e-10])

#: Logits in the tails of softplus: ``log(1 + e^x)`` is ``e^x`` below about -37 (where
#: ``log(1 + e^x)`` rounds to 0) and ``x`` above (where ``e^x`` overflows past 709).
_TAIL_LOGITS = np.asarray([-800.0, -100.0, -40.0, -20.0, -1e-10, 1e-10, 20.0, 40.0, 100.0,
                           800.0])

#: Subnormal and tiny targets for kl_div: ``y (log y - x)`` is subnormal for the smallest.
_TINY_TARGETS = np.asarray([5e-324, 3e-320, 1e-310, 1e-300, 1e-200, 2.2250738585072014e-308])


@register_cases
def accuracy_cases() -> Iterator[Case]:
    """Arguments where log1p, expm1, logaddexp, exp and log differ from their naive forms."""
    for reduction in REDUCTIONS:
        options = {"reduction": reduction}
        yield _unlabelled("near-0-and-1", "binary_cross_entropy",
                          {"input": _PROBABILITIES, "target": _PROBABILITY_TARGETS}, options)
        yield _unlabelled("near-0", "binary_cross_entropy",
                          {"input": np.asarray([1e-10, 2e-10, 1e-12, 3e-11, 1e-9]),
                           "target": np.zeros(5)}, options)
        yield _unlabelled("near-1", "binary_cross_entropy",
                          {"input": 1 - np.asarray([1e-10, 2e-10, 1e-12, 3e-11, 1e-9]),
                           "target": np.asarray([0.0, 0.0, 0.0, 0.0, 1.0])}, options)
        targets = np.where(np.arange(_TAIL_LOGITS.size) % 2 == 0, 0.0, 1.0)
        yield _unlabelled("softplus-tails", "binary_cross_entropy_with_logits",
                          {"input": _TAIL_LOGITS, "target": targets}, options)
        # torch's soft_margin_loss overflows where exp(-y x) does (README: anyloss stays
        # finite): the far tails are taken where -y x is very negative only.
        margins = np.where(np.abs(_TAIL_LOGITS) > 50, np.sign(_TAIL_LOGITS), 2 * targets - 1)
        yield _unlabelled("softplus-tails", "soft_margin_loss",
                          {"input": _TAIL_LOGITS, "target": margins}, options)
        yield _unlabelled("subnormal-targets", "kl_div",
                          {"input": np.linspace(-3.0, 3.0, _TINY_TARGETS.size),
                           "target": _TINY_TARGETS}, options, dtypes=_FLOAT64)
        yield _unlabelled("subnormal-targets-float32", "kl_div",
                          {"input": np.linspace(-3.0, 3.0, 5),
                           "target": np.asarray([1.4e-45, 1e-42, 1e-39, 1e-38, 1e-30])},
                          options)
        yield _unlabelled("log-input-tails", "poisson_nll_loss",
                          {"input": np.asarray([-740.0, -700.0, -40.0, -1e-10, 1e-10, 30.0, 80.0]),
                           "target": np.asarray([0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 1.0])}, options)
        yield _unlabelled("tiny-input", "poisson_nll_loss",
                          {"input": np.asarray([1e-300, 1e-12, 1e-8, 1e-30]),
                           "target": np.asarray([1.0, 2.0, 0.0, 5.0])},
                          {**options, "log_input": False})
        yield _unlabelled("tiny-variances", "gaussian_nll_loss",
                          {"input": np.asarray([1e-8, 0.5, 1.0, -2.0]),
                           "target": np.asarray([0.0, 0.5 + 1e-9, 1.0, -2.0 + 1e-5]),
                           "var": np.asarray([1e-310, 1e-6, 1e-5, 1e-12])},
                          options, dtypes=_FLOAT64)
        tiny = np.asarray([1e-300, 5e-324, 1e-160, 1e150, -1e-155, 3.0])
        yield _unlabelled("tiny-and-huge", "mse_loss",
                          {"input": tiny, "target": np.zeros_like(tiny)}, options,
                          dtypes=_FLOAT64)
        yield _unlabelled("tiny-and-huge", "l1_loss",
                          {"input": tiny, "target": -tiny}, options, dtypes=_FLOAT64)


@register_cases
def large_reduction_cases() -> Iterator[Case]:
    """Sums and means of 10^6 terms of similar size (every term about 0.1)."""
    g = rng(900)
    x = g.standard_normal(LARGE)
    y = x + np.where(g.random(LARGE) < 0.5, -1.0, 1.0) * g.uniform(0.3, 0.33, LARGE)
    for reduction in ("mean", "sum"):
        yield Case("mse_loss", {"input": x, "target": y}, {"reduction": reduction},
                   label="large", differentiable=())
        yield Case("l1_loss", {"input": x, "target": y}, {"reduction": reduction},
                   label="large", differentiable=())
