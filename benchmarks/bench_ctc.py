"""Time anyloss.ctc_loss against torch's native CPU ctc_loss, side by side in one run.

    python benchmarks/bench_ctc.py [--repeat 15]

Shape of issue 4: T=500, N=32, C=64, S=100, float32, full lengths. Each round
times every contender once, in turn, so that a busy machine slows all of them
alike; the medians and the ratios (torch time / anyloss time, > 1 means
anyloss is faster) are printed, after a line on the machine (CPU, SIMD level,
versions), beside the memory floor: one read pass over the log-probabilities
(``lp.max()``, timed in the same rounds), with each anyloss time as a multiple
of it. ``--repeat 3`` is a quick try.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss
from anyloss.backends.numpy import compiled as numpy_compiled

#: The memory floor: one read pass over the log-probabilities.
READ_PASS = "memory floor (read pass, lp.max())"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(machine_line(), flush=True)
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
        READ_PASS: lp.max,
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
    engine = "numba" if numpy_compiled.HAVE_NUMBA else "pure numpy"
    print(f"ctc_loss T={T} N={N} C={C} S={S} float32, median of {args.repeat} rounds")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, numpy engine: {engine}")
    floor = medians[READ_PASS]
    for name, value in medians.items():
        multiple = f"  {value / floor:8.1f}x the floor" if name.startswith("anyloss") else ""
        print(f"  {name:34s} {value * 1e3:8.2f} ms{multiple}")
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
