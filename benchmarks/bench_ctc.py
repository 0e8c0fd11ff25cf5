"""Time anyloss.ctc_loss against torch's native CPU ctc_loss, side by side in one run.

    python benchmarks/bench_ctc.py [--repeat 15]

Shape of issue 4: T=500, N=32, C=64, S=100, float32, full lengths. Each round
times every contender once, in turn, so that a busy machine slows all of them
alike; the medians and the ratios (torch time / anyloss time, > 1 means
anyloss is faster) are printed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

import anyloss
from anyloss.backends import numpy as numpy_backend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    T, N, C, S = 500, 32, 64, 100
    g = np.random.default_rng(0)
    x = g.standard_normal((T, N, C)).astype(np.float32)
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
    }
    for func in contenders.values():  # warm up (numba compiles, caches fill)
        func()
    times = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, func in contenders.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    engine = "numba" if numpy_backend.HAVE_NUMBA else "pure numpy"
    print(f"ctc_loss T={T} N={N} C={C} S={S} float32, median of {args.repeat} rounds")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, numpy engine: {engine}")
    for name, value in medians.items():
        print(f"  {name:34s} {value * 1e3:8.2f} ms")
    ratios = {
        "anyloss-numpy, forward": ("torch native forward", "anyloss numpy forward"),
        "anyloss-numpy, forward+gradient": ("torch native forward+backward",
                                            "anyloss numpy ctc_loss_and_grad"),
        "anyloss-torch, forward": ("torch native forward", "anyloss torch forward"),
        "anyloss-torch, forward+backward": ("torch native forward+backward",
                                            "anyloss torch forward+backward"),
    }
    for label, (reference, contender) in ratios.items():
        print(f"ratio torch/{label + ':':33s} {medians[reference] / medians[contender]:.2f}x")


if __name__ == "__main__":
    main()
