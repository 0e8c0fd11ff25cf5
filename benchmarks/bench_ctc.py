"""Time anyloss.ctc_loss against torch's native CPU ctc_loss, side by side in one run.

    python benchmarks/bench_ctc.py [--repeat 15] [--float64] [--shape small|speech]

Shapes (issue 11): ``small`` T=500, N=32, C=64, S=100, and ``speech`` (a
large-vocabulary speech case) T=2000, N=8, C=1000, S=300; float32, full lengths,
log-softmax of standard normal logits. ``--float64`` adds float64 rows. Each
round times every contender once, in turn, so that a busy machine slows all of
them alike; the medians and the ratios (torch time / anyloss time, > 1 means
anyloss is faster) are printed, after a line on the machine (CPU, SIMD level,
versions) and one on numba's threading layer and thread counts, beside the
memory floor: one read pass over the log-probabilities (``lp.max()``, timed in
the same rounds), with each anyloss time as a multiple of it. ``--repeat 3`` is
a quick try.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss
from anyloss._threads import get_threads
from anyloss.backends.numpy import compiled as numpy_compiled

#: The memory floor: one read pass over the log-probabilities.
READ_PASS = "memory floor (read pass, lp.max())"

SHAPES = {"small": (500, 32, 64, 100), "speech": (2000, 8, 1000, 300)}


def threading_line() -> str:
    """numba's threading layer and thread counts, and torch's."""
    if not numpy_compiled.HAVE_NUMBA:
        return f"numpy engine: pure numpy ({numpy_compiled.WHY_NOT or 'numba switched off'})"
    import numba

    @numba.njit(parallel=True)
    def touch(n):  # a parallel launch, so that numba picks its threading layer
        total = 0
        for i in numba.prange(n):
            total += i
        return total

    touch(4)
    return (f"numpy engine: numba, threading layer {numba.threading_layer()}, "
            f"{min(get_threads(), numba.config.NUMBA_NUM_THREADS)} anyloss threads "
            f"(get_threads() {get_threads()}, NUMBA_NUM_THREADS "
            f"{numba.config.NUMBA_NUM_THREADS}); torch {torch.get_num_threads()} threads")


def bench(shape: str, dtype, repeat: int) -> None:
    T, N, C, S = SHAPES[shape]
    g = np.random.default_rng(0)
    x = g.standard_normal((T, N, C)).astype(dtype)
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    targets = g.integers(1, C, (N, S))
    il, tl = np.full(N, T), np.full(N, S)
    t_lp, t_targets, t_il, t_tl = map(torch.from_numpy, (lp, targets, il, tl))

    def torch_forward():
        F.ctc_loss(t_lp, t_targets, t_il, t_tl)

    def torch_forward_backward():
        leaf = t_lp.clone().requires_grad_(True)
        F.ctc_loss(leaf, t_targets, t_il, t_tl).backward()

    def anyloss_numpy():
        anyloss.ctc_loss(lp, targets, il, tl)

    def anyloss_numpy_grad():
        anyloss.ctc_loss_and_grad(lp, targets, il, tl)

    def anyloss_torch():
        anyloss.ctc_loss(t_lp, t_targets, t_il, t_tl)

    def anyloss_torch_backward():
        leaf = t_lp.clone().requires_grad_(True)
        anyloss.ctc_loss(leaf, t_targets, t_il, t_tl).backward()

    contenders = {
        "torch native forward": torch_forward,
        "anyloss numpy forward": anyloss_numpy,
        "anyloss torch forward": anyloss_torch,
        "torch native forward+backward": torch_forward_backward,
        "anyloss numpy ctc_loss_and_grad": anyloss_numpy_grad,
        "anyloss torch forward+backward": anyloss_torch_backward,
        READ_PASS: lp.max,
    }
    for func in contenders.values():  # warm up (numba compiles, caches fill)
        func()
    times = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, func in contenders.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    floor = medians[READ_PASS]
    print(f"ctc_loss {shape}: T={T} N={N} C={C} S={S} {np.dtype(dtype).name}, "
          f"median of {repeat} rounds")
    for name, value in medians.items():
        multiple = f"  {value / floor:8.1f}x the floor" if name != READ_PASS else ""
        print(f"  {name:34s} {value * 1e3:9.2f} ms{multiple}")
    ratios = {
        "anyloss-numpy, forward": ("torch native forward", "anyloss numpy forward"),
        "anyloss-numpy, forward+gradient": ("torch native forward+backward",
                                            "anyloss numpy ctc_loss_and_grad"),
        "anyloss-torch, forward": ("torch native forward", "anyloss torch forward"),
        "anyloss-torch, forward+backward": ("torch native forward+backward",
                                            "anyloss torch forward+backward"),
    }
    for label, (reference, contender) in ratios.items():
        print(f"  ratio torch/{label + ':':33s} {medians[reference] / medians[contender]:6.2f}x"
              f"   (anyloss {medians[contender] / floor:.1f}x the floor)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--float64", action="store_true", help="add float64 rows")
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append",
                        help="a shape to time (repeatable; default: all)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    print(threading_line(), flush=True)
    dtypes = [np.float32, np.float64] if args.float64 else [np.float32]
    for shape in args.shape or list(SHAPES):
        for dtype in dtypes:
            bench(shape, dtype, args.repeat)


if __name__ == "__main__":
    main()
