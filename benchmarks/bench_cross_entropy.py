"""Time anyloss.cross_entropy (NumPy fast path) against torch's CPU F.cross_entropy, in one run.

    python benchmarks/bench_cross_entropy.py [--repeat 7] [--shapes 4096x32000,1024x128256]

For each shape (float32 logits, int64 class indices, reduction 'mean'), each
round times every contender once, in turn, so that a busy machine slows all of
them alike. Printed: the median time of each, the ratio torch time / contender
time (> 1: faster than torch) for the forward pass and for forward + gradient,
with an optax-style ``jax.jit(logsumexp(x) - x[y])`` column when JAX is
installed, and the peak memory each needs beyond its input (RSS high-water
mark, and tracemalloc for anyloss), as a share of the input's size; for the
gradient, beyond the gradient output as well. Beside them: the machine (CPU,
SIMD level, versions) and the memory floor, one read pass over the logits
(``x.max()``, timed in the same rounds), with each contender's time as a
multiple of it. ``--repeat 3 --shapes 512x1000`` is a quick try.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover
    jax = None


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_rss_extra(func) -> float | None:
    """Bytes of resident memory ``func`` needs above what is resident before it (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset the high-water mark VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kib("VmRSS:")
    result = func()
    del result
    return max(0, _rss_kib("VmHWM:") - before) * 1024.0


def tracemalloc_extra(func) -> float:
    """Peak bytes NumPy (and Python) allocate during ``func``, minus what it returns."""
    tracemalloc.start()
    try:
        result = func()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(a.nbytes for a in (result if isinstance(result, tuple) else (result,))
               if a.ndim)
    return peak - kept


def contenders(x: np.ndarray, target: np.ndarray):
    t_x, t_target = torch.from_numpy(x), torch.from_numpy(target)

    def torch_forward():
        return F.cross_entropy(t_x, t_target)

    def torch_grad():
        leaf = t_x.detach().requires_grad_(True)
        loss = F.cross_entropy(leaf, t_target)
        loss.backward()
        return loss.detach(), leaf.grad

    forward = {"torch": torch_forward,
               "anyloss": lambda: anyloss.cross_entropy(x, target)}
    grad = {"torch": torch_grad,
            "anyloss": lambda: anyloss.cross_entropy_and_grad(x, target)}
    if jax is not None:
        j_x, j_target = jax.device_put(x), jax.device_put(target.astype(np.int32))

        def optax_style(logits, labels):
            picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)

        jit_loss = jax.jit(optax_style)
        jit_grad = jax.jit(jax.value_and_grad(optax_style))
        forward["jax.jit"] = lambda: jit_loss(j_x, j_target).block_until_ready()
        grad["jax.jit"] = lambda: jax.block_until_ready(jit_grad(j_x, j_target))
    return forward, grad


def time_side_by_side(funcs: dict, repeat: int) -> dict:
    for f in funcs.values():  # warm up: compile, pools, scratch buffers
        f()
    times = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, f in funcs.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def check_agreement(x, target) -> float:
    got = float(anyloss.cross_entropy(x, target))
    expected = float(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(target)))
    return abs(got - expected) / abs(expected)


def report(shape, repeat: int) -> None:
    n, c = shape
    g = np.random.default_rng(0)
    x = g.standard_normal((n, c), dtype=np.float32)
    target = g.integers(0, c, n)
    forward, grad = contenders(x, target)
    size = x.nbytes
    print(f"\n(N, C) = ({n}, {c}) float32, input {size / 2**20:.0f} MiB, "
          f"relative difference anyloss vs torch: {check_agreement(x, target):.1e}")
    print(f"{'':28s}{'median ms':>10s} {'torch/this':>11s} {'peak extra RSS':>16s} "
          f"{'x floor':>8s}")
    for label, funcs, output in (("forward", forward, 0), ("forward+gradient", grad, size)):
        # The memory floor: one read pass over the input, timed in the same rounds.
        medians = time_side_by_side({**funcs, "read pass": x.max}, repeat)
        floor = medians["read pass"]
        for name, f in funcs.items():
            rss = peak_rss_extra(f)
            rss_text = "n/a" if rss is None else f"{max(rss - output, 0) / size:6.1%}"
            ratio = medians["torch"] / medians[name]
            print(f"  {label + ' ' + name:26s}{medians[name] * 1e3:10.1f} {ratio:10.2f}x "
                  f"{rss_text:>16s} {medians[name] / floor:7.1f}x")
        print(f"  {label + ' read pass':26s}{floor * 1e3:10.2f}   "
              "(the memory floor: x.max())")
        traced = tracemalloc_extra(funcs["anyloss"])
        print(f"  {label + ' anyloss tracemalloc peak beyond input':>58s}"
              f"{'' if not output else ' and gradient'}: {traced / size:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shapes", default="4096x32000,1024x128256")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(machine_line())
    print(f"{datetime.date.today()}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), numpy {np.__version__}"
          + (f", jax {jax.__version__}" if jax is not None else ""))
    print("ratio = torch median / contender median (> 1: faster than torch); peak extra RSS "
          "as a share of the input (for the gradient: beyond the gradient output); x floor = "
          "median / the memory floor (one read pass over the input)")
    for shape in shapes:
        report(shape, args.repeat)


if __name__ == "__main__":
    main()
