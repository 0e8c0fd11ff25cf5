"""Time anyloss against torch.nn.functional on CPU torch tensors, side by side in one run.

    python benchmarks/bench_torch_cpu.py [--repeat 9] [--only ce|ctc|lce]

anyloss routes float32/float64 CPU tensors to its NumPy kernels through zero-copy
views, as ``torch.library`` custom operators (:mod:`anyloss.backends.torch_ops`).
Contenders, each forward and forward + backward (``requires_grad`` input,
``loss.backward()``):

- ``F.cross_entropy`` vs ``anyloss.cross_entropy``, 4096 x 32000 float32 logits
  (standard normal), int64 targets, reduction 'mean';
- ``F.ctc_loss`` vs ``anyloss.ctc_loss``, T=500 N=32 C=64 S=100 float32
  log-softmax of standard normal logits, full lengths, reduction 'mean';
- ``F.linear_cross_entropy`` vs ``anyloss.linear_cross_entropy``, N=2048, D=512,
  C=32000 float32; forward + backward with the input and the weight requiring grad
  (as in training an output layer; anyloss runs the fused operator
  ``anyloss::linear_cross_entropy_fused``).

Each round times every contender once, in turn, so that a busy machine slows all
of them alike; medians, ratios (torch time / anyloss time, > 1 means anyloss is
faster) and the memory floor (one read pass of the input, ``x.max()``, timed in
the same rounds) with each time as a multiple of it are printed after the
machine line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss
from anyloss._threads import get_threads

READ_PASS = "memory floor (read pass, x.max())"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _backward(loss_fn, *tensors):
    """Forward + backward of ``loss_fn(*leaves)``, each of ``tensors`` a fresh leaf."""
    def run():
        leaves = [t.detach().requires_grad_(True) for t in tensors]
        loss_fn(*leaves).backward()
    return run


def _rounds(contenders: dict, repeat: int) -> dict:
    for fn in contenders.values():  # warm up (numba compilation, allocator)
        fn()
    times = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def _report(title: str, medians: dict, pairs: list[tuple[str, str]]) -> None:
    floor = medians[READ_PASS]
    print(f"\n{title}")
    print(f"  {READ_PASS}: {floor * 1e3:9.2f} ms")
    for torch_name, anyloss_name in pairs:
        t, a = medians[torch_name], medians[anyloss_name]
        print(f"  {torch_name:<34} {t * 1e3:9.2f} ms  ({t / floor:5.2f}x floor)")
        print(f"  {anyloss_name:<34} {a * 1e3:9.2f} ms  ({a / floor:5.2f}x floor)"
              f"   ratio torch/anyloss {t / a:5.2f}")


def bench_cross_entropy(repeat: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 32000, generator=g)
    t = torch.randint(0, 32000, (4096,), generator=g)
    medians = _rounds({
        READ_PASS: lambda: x.max(),
        "F.cross_entropy forward": lambda: F.cross_entropy(x, t),
        "anyloss.cross_entropy forward": lambda: anyloss.cross_entropy(x, t),
        "F.cross_entropy fwd+bwd": _backward(lambda v: F.cross_entropy(v, t), x),
        "anyloss.cross_entropy fwd+bwd": _backward(lambda v: anyloss.cross_entropy(v, t), x),
    }, repeat)
    _report("cross_entropy, 4096 x 32000 float32, reduction 'mean'", medians, [
        ("F.cross_entropy forward", "anyloss.cross_entropy forward"),
        ("F.cross_entropy fwd+bwd", "anyloss.cross_entropy fwd+bwd")])


def bench_ctc(repeat: int) -> None:
    T, N, C, S = 500, 32, 64, 100
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(T, N, C, generator=g).log_softmax(2)
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.full((N,), T, dtype=torch.int64)
    tl = torch.full((N,), S, dtype=torch.int64)
    medians = _rounds({
        READ_PASS: lambda: lp.max(),
        "F.ctc_loss forward": lambda: F.ctc_loss(lp, targets, il, tl),
        "anyloss.ctc_loss forward": lambda: anyloss.ctc_loss(lp, targets, il, tl),
        "F.ctc_loss fwd+bwd": _backward(lambda v: F.ctc_loss(v, targets, il, tl), lp),
        "anyloss.ctc_loss fwd+bwd": _backward(
            lambda v: anyloss.ctc_loss(v, targets, il, tl), lp),
    }, repeat)
    _report(f"ctc_loss, T={T} N={N} C={C} S={S} float32, reduction 'mean'", medians, [
        ("F.ctc_loss forward", "anyloss.ctc_loss forward"),
        ("F.ctc_loss fwd+bwd", "anyloss.ctc_loss fwd+bwd")])


def bench_linear_cross_entropy(repeat: int) -> None:
    n, d, c = 2048, 512, 32000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) / d ** 0.5
    t = torch.randint(0, c, (n,), generator=g)
    medians = _rounds({
        READ_PASS: lambda: w.max(),
        "F.linear_cross_entropy forward": lambda: F.linear_cross_entropy(x, w, t),
        "anyloss.linear_cross_entropy forward": lambda: anyloss.linear_cross_entropy(x, w, t),
        "F.linear_cross_entropy fwd+bwd": _backward(
            lambda v, u: F.linear_cross_entropy(v, u, t), x, w),
        "anyloss.linear_cross_entropy fwd+bwd": _backward(
            lambda v, u: anyloss.linear_cross_entropy(v, u, t), x, w),
    }, repeat)
    _report(f"linear_cross_entropy, N={n} D={d} C={c} float32 (floor: read of the weight)",
            medians, [("F.linear_cross_entropy forward", "anyloss.linear_cross_entropy forward"),
                      ("F.linear_cross_entropy fwd+bwd",
                       "anyloss.linear_cross_entropy fwd+bwd")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--only", choices=("ce", "ctc", "lce"))
    args = parser.parse_args()
    print(machine_line())
    print(f"anyloss threads {get_threads()}; torch threads {torch.get_num_threads()}")
    if args.only in (None, "ce"):
        bench_cross_entropy(args.repeat)
    if args.only in (None, "ctc"):
        bench_ctc(args.repeat)
    if args.only in (None, "lce"):
        bench_linear_cross_entropy(args.repeat)


if __name__ == "__main__":
    main()
