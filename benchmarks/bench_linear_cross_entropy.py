"""Time anyloss.linear_cross_entropy on NumPy against torch's, side by side in one run.

For each shape (N rows, D features, V classes, float32) it times, interleaved
round by round, and prints medians and ratios:

- the floor: the matmul ``x @ W.T`` alone (one for the forward; three for forward
  and gradients: the logits, ``G @ W`` and ``G.T @ x``, timed as the logits'
  matmul three times);
- torch's plain ``F.linear_cross_entropy`` (it holds the N x V logits) and its
  chunked path (``options=LinearCrossEntropyOptions()``), forward, and forward +
  backward;
- anyloss on NumPy arrays: ``linear_cross_entropy`` and
  ``linear_cross_entropy_and_grad`` (row blocks of logits, never all of them),
  with the peak memory of its allocations beyond the inputs and gradients
  (tracemalloc, one extra call).

    python benchmarks/bench_linear_cross_entropy.py --shapes 4096x1024x32000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss


def _time(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def _shape(text: str) -> tuple[int, int, int]:
    n, d, v = (int(p) for p in text.lower().split("x"))
    return n, d, v


def run(n: int, d: int, v: int, repeat: int) -> None:
    g = np.random.default_rng(0)
    x = (g.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    w = g.standard_normal((v, d)).astype(np.float32)
    t = g.integers(0, v, n)
    xt, wt, tt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(t)
    chunked = torch.nn.LinearCrossEntropyOptions()
    logits = np.empty((n, v), dtype=np.float32)

    def torch_backward(options):
        leaves = [xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)]
        F.linear_cross_entropy(*leaves, tt, options=options).backward()

    timed = {
        "matmul floor": lambda: np.matmul(x, w.T, out=logits),
        "torch plain forward": lambda: F.linear_cross_entropy(xt, wt, tt),
        "torch chunked forward": lambda: F.linear_cross_entropy(xt, wt, tt, options=chunked),
        "anyloss forward": lambda: anyloss.linear_cross_entropy(x, w, t),
        "torch plain forward+backward": lambda: torch_backward(None),
        "torch chunked forward+backward": lambda: torch_backward(chunked),
        "anyloss forward+gradients": lambda: anyloss.linear_cross_entropy_and_grad(x, w, t),
    }
    for f in timed.values():
        f()  # warm: threads, numba, allocator
    times: dict[str, list[float]] = {k: [] for k in timed}
    for _ in range(repeat):
        for name, f in timed.items():
            times[name].append(_time(f))
    med = {k: statistics.median(s) for k, s in times.items()}
    floor = med["matmul floor"]
    print(f"\nN={n} D={d} V={v} float32; logits would be {n * v * 4 / 2**30:.2f} GiB; "
          f"medians of {repeat}")
    for name, s in med.items():
        multiple = s / floor if "forward+" not in name else s / (3 * floor)
        unit = "x the matmul" if "forward+" not in name else "x three matmuls"
        print(f"  {name:32s} {s * 1e3:9.1f} ms  {multiple:5.2f} {unit}")
    for ours, theirs in (("anyloss forward", "torch plain forward"),
                         ("anyloss forward", "torch chunked forward"),
                         ("anyloss forward+gradients", "torch plain forward+backward"),
                         ("anyloss forward+gradients", "torch chunked forward+backward")):
        print(f"  {theirs} / {ours}: {med[theirs] / med[ours]:.2f}")
    tracemalloc.start()
    anyloss.linear_cross_entropy(x, w, t)
    forward_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    anyloss.linear_cross_entropy_and_grad(x, w, t)
    gradient_peak = tracemalloc.get_traced_memory()[1] - (x.nbytes + w.nbytes)
    tracemalloc.stop()
    logits_bytes = n * v * 4
    print(f"  anyloss peak beyond inputs (and gradients): forward {forward_peak / 2**20:.1f} MiB "
          f"({100 * forward_peak / logits_bytes:.2f}% of the logits), forward+gradients "
          f"{gradient_peak / 2**20:.1f} MiB ({100 * gradient_peak / logits_bytes:.2f}%)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="4096x1024x32000",
                        help="comma-separated NxDxV (default: 4096x1024x32000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    for shape in args.shapes.split(","):
        run(*_shape(shape), args.repeat)


if __name__ == "__main__":
    main()
