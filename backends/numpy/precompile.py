"""``anyloss compile``: the NumPy engine's numba kernels compiled now, into numba's cache.

numba compiles a kernel on its first call with each new signature (the dtypes,
ranks and layouts of its arguments) and keeps the machine code in its on-disk
cache, next to the kernel's source (or under ``NUMBA_CACHE_DIR``). Until then the
first call of a loss pays the compilation: about a minute for cross entropy's
row kernels, in every environment (a container image, a CI runner) whose cache
is cold. :func:`compile_kernels` pays it once, ahead: it calls every NumPy fast
path of the registry that needs numba, through the public function, in float32
and float64, on one thread and on two (a ``prange`` kernel has a serial and a
parallel copy, :mod:`.compiled.parallel`), forward and gradient, at sizes past
every threshold below which a path declines or runs serially.

Only what those calls reach is compiled: a call with another signature (int32
targets, a non-contiguous input that a path still takes) compiles on first use
as before. ``tests/test_precompile.py`` checks that every NumPy kernel record that
needs numba has its calls here, and that every compiled kernel ends up with a
signature.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

__all__ = ["CALLS", "MODULES", "compile_kernels"]

#: Rows and columns of the 2-d samples: 2^16 elements, past cross entropy's
#: ``_CE_MIN_ELEMENTS`` and the elementwise kernels' ``PARALLEL_MIN``.
_N, _C = 256, 256


def _logits(rng: np.random.Generator, dtype, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _classes(rng: np.random.Generator, n: int, *shape: int) -> np.ndarray:
    return rng.integers(0, n, size=shape, dtype=np.int64)


def _signs(rng: np.random.Generator, dtype, *shape: int) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(dtype)


def _cross_entropy(rng, dtype) -> Iterator[tuple]:
    x, t = _logits(rng, dtype, _N, _C), _classes(rng, _C, _N)
    w = rng.random(_C).astype(dtype)
    yield (x, t), {}
    yield (x, t), {"weight": w, "label_smoothing": 0.1}
    yield (_logits(rng, dtype, 16, 64, 64), _classes(rng, 64, 16, 64)), {}  # columns
    yield (_logits(rng, dtype, _N, _C + 8)[:, :_C], t), {}  # rows apart
    for shape in ((_N, _C), (16, 64, 64)):  # rows; K-dimensional: columns
        probabilities = rng.random(shape).astype(dtype)
        logits = x if len(shape) == 2 else _logits(rng, dtype, *shape)
        yield (logits, probabilities / probabilities.sum(axis=1, keepdims=True)), {}
    if dtype == np.float32:  # float16, through the float32 kernels and the conversions
        yield (x.astype(np.float16), t), {}


def _linear_cross_entropy(rng, dtype) -> Iterator[tuple]:
    x, w = _logits(rng, dtype, _N, 32), _logits(rng, dtype, _C, 32)
    yield (x, w, _classes(rng, _C, _N)), {}


def _ctc(rng, dtype) -> Iterator[tuple]:
    t_len, n, c, s = 40, 4, 12, 10
    z = _logits(rng, dtype, t_len, n, c)
    log_probs = (z - np.log(np.exp(z).sum(axis=2, keepdims=True))).astype(dtype)
    targets = rng.integers(1, c, size=(n, s), dtype=np.int64)
    lengths = np.full(n, t_len, dtype=np.int64), np.full(n, s, dtype=np.int64)
    yield (log_probs, targets, *lengths), {}
    yield (log_probs, targets.reshape(-1), *lengths), {"zero_infinity": True}
    # (N, T, C) data seen as (T, N, C): the kernels take log_probs in its own layout.
    batch_first = np.ascontiguousarray(log_probs.transpose(1, 0, 2))
    yield (batch_first.transpose(1, 0, 2), targets, *lengths), {}


def _nll(rng, dtype) -> Iterator[tuple]:
    yield (_logits(rng, dtype, _N, _C), _classes(rng, _C, _N)), {}


def _multi_margin(rng, dtype) -> Iterator[tuple]:
    x, t = _logits(rng, dtype, _N, _C), _classes(rng, _C, _N)
    yield (x, t), {}
    yield (x, t), {"p": 2, "weight": rng.random(_C).astype(dtype)}


def _multilabel_margin(rng, dtype) -> Iterator[tuple]:
    t = _classes(rng, _C, _N, _C)
    t[:, 4] = -1
    yield (_logits(rng, dtype, _N, _C), t), {}


def _pair(rng, dtype) -> Iterator[tuple]:
    yield (_logits(rng, dtype, _N, _C), _logits(rng, dtype, _N, _C)), {}


def _signed(rng, dtype) -> Iterator[tuple]:
    yield (_logits(rng, dtype, _N, _C), _signs(rng, dtype, _N, _C)), {}


def _labels(rng, dtype) -> Iterator[tuple]:
    x, y = _logits(rng, dtype, _N, _C), (rng.random((_N, _C)) < 0.5).astype(dtype)
    yield (x, y), {}
    yield (x, y), {"weight": rng.random(_C).astype(dtype)}


def _kl_div(rng, dtype) -> Iterator[tuple]:
    x, y = _logits(rng, dtype, _N, _C), _logits(rng, dtype, _N, _C)
    yield (x, np.abs(y)), {}
    yield (x, y), {"log_target": True}


def _poisson(rng, dtype) -> Iterator[tuple]:
    x, y = _logits(rng, dtype, _N, _C), rng.poisson(2.0, (_N, _C)).astype(dtype)
    yield (x, y), {}
    yield (np.abs(x), y), {"log_input": False, "full": True}


def _gaussian(rng, dtype) -> Iterator[tuple]:
    x, y = _logits(rng, dtype, _N, _C), _logits(rng, dtype, _N, _C)
    yield (x, y, rng.random((_N, _C)).astype(dtype) + dtype(0.5)), {}
    yield (x, y, rng.random((_N, 1)).astype(dtype) + dtype(0.5)), {"full": True}


def _binary(rng, dtype) -> Iterator[tuple]:
    p, y = rng.random((_N, _C)).astype(dtype), rng.random((_N, _C)).astype(dtype)
    yield (p, y), {}
    yield (p, y), {"weight": rng.random(_C).astype(dtype)}


def _binary_logits(rng, dtype) -> Iterator[tuple]:
    x, y = _logits(rng, dtype, _N, _C), rng.random((_N, _C)).astype(dtype)
    yield (x, y), {}
    yield (x, y), {"weight": rng.random(_C).astype(dtype),
                   "pos_weight": rng.random(_C).astype(dtype)}


def _cosine(rng, dtype) -> Iterator[tuple]:
    n = _N * 4
    pair = _logits(rng, dtype, n, _C // 4), _logits(rng, dtype, n, _C // 4), _signs(rng, dtype, n)
    yield pair, {}  # margin 0, an int
    yield pair, {"margin": 0.5}


#: Per public function, the calls (positional and keyword arguments, from a generator and a
#: dtype) that reach its NumPy kernels.
CALLS: dict[str, Callable[[np.random.Generator, Any], Iterator[tuple]]] = {
    "cross_entropy": _cross_entropy,
    "cross_entropy_and_grad": _cross_entropy,
    "linear_cross_entropy": _linear_cross_entropy,
    "linear_cross_entropy_and_grad": _linear_cross_entropy,
    "ctc_loss": _ctc,
    "ctc_loss_and_grad": _ctc,
    "nll_loss": _nll,
    "multi_margin_loss": _multi_margin,
    "multilabel_margin_loss": _multilabel_margin,
    "huber_loss": _pair,
    "smooth_l1_loss": _pair,
    "soft_margin_loss": _signed,
    "hinge_embedding_loss": _signed,
    "multilabel_soft_margin_loss": _labels,
    "kl_div": _kl_div,
    "poisson_nll_loss": _poisson,
    "gaussian_nll_loss": _gaussian,
    "binary_cross_entropy": _binary,
    "binary_cross_entropy_with_logits": _binary_logits,
    "cosine_embedding_loss": _cosine,
}


#: The functions of :data:`CALLS` by the kernel module their calls compile, costliest first
#: (cold, two processes at a time on a 2-core AMD EPYC, 2026-12-06: cross entropy 174 s, CTC
#: and the elementwise losses 180 s together, the class losses about 4 s): jobs in parallel
#: processes take whole modules, so that no two compile the same kernel into the cache.
MODULES: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("cross_entropy", "cross_entropy_and_grad", "linear_cross_entropy",
                      "linear_cross_entropy_and_grad"),
    "ctc": ("ctc_loss", "ctc_loss_and_grad"),
    "elementwise": ("huber_loss", "smooth_l1_loss", "soft_margin_loss", "hinge_embedding_loss",
                    "multilabel_soft_margin_loss", "kl_div", "poisson_nll_loss",
                    "gaussian_nll_loss", "binary_cross_entropy",
                    "binary_cross_entropy_with_logits", "cosine_embedding_loss"),
    "class_losses": ("nll_loss", "multi_margin_loss", "multilabel_margin_loss"),
}


def _run_calls(names: list[str]) -> list[str]:
    """Make the calls of ``names`` (see :func:`compile_kernels`); a line per function."""
    import anyloss

    rng = np.random.default_rng(0)
    lines = []
    for name in names:
        began = time.perf_counter()
        function = getattr(anyloss, name)
        for dtype in (np.float32, np.float64):
            for args, kwargs in CALLS[name](rng, dtype):
                for threads in (1, 2):
                    with anyloss.threads(threads):
                        for reduction in ("none", "sum"):
                            function(*args, reduction=reduction, **kwargs)
        lines.append(f"{name}: {time.perf_counter() - began:.1f} s")
    return lines


def compile_kernels(functions: list[str] | None = None, *, jobs: int = 1,
                    report: Callable[[str], None] | None = None) -> float:
    """Make every call of :data:`CALLS` (or of ``functions``) in float32 and float64, on
    one thread and on two, unreduced and summed; return the seconds it took.

    ``jobs > 1`` runs the kernel modules (:data:`MODULES`) in that many processes.
    ``report`` receives a line per function (name and seconds). Calls with numba absent
    run the NumPy engines and compile nothing."""
    start = time.perf_counter()
    wanted = set(functions or CALLS)
    groups = [[f for f in names if f in wanted] for names in MODULES.values()]
    groups = [g for g in groups if g]
    if jobs <= 1 or len(groups) <= 1:
        results = [_run_calls([f for g in groups for f in g])]
    else:
        context = multiprocessing.get_context("spawn")  # no fork of numba's threads
        with ProcessPoolExecutor(min(jobs, len(groups)), mp_context=context) as pool:
            results = list(pool.map(_run_calls, groups))
    for lines in results:
        for line in lines:
            if report is not None:
                report(line)
    return time.perf_counter() - start
