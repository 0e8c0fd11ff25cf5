"""Time anyloss on GPU arrays (CuPy, CUDA torch tensors, JAX on its GPU) against torch's CUDA
losses, side by side in one run.

    python benchmarks/bench_gpu.py [--repeat 10]

anyloss has no GPU kernels of its own: on CUDA torch tensors its fast paths hand
cross entropy and CTC to torch's own kernels, and elsewhere on a GPU the
portable formula runs, one library call per step. This script measures what
that costs. Cases (float32): cross entropy 4096x32000 forward and
forward + gradient, CTC T=500 N=32 C=64 S=100 forward, and ``mse_loss`` and
``binary_cross_entropy_with_logits`` at 2048x4096. Each round times every
contender once, in turn; every time is a median over the rounds, taken with
the device synchronised before and after. Printed: the GPU and versions, the
memory floor of each case (one read pass over the largest input, ``x.amax()``
in torch), each contender's median, its ratio torch time / its time (> 1:
faster than torch) and its multiple of the floor. Needs a CUDA GPU and torch;
CuPy and JAX columns appear when they are installed and see the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import anyloss


def _cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # not installed, or no GPU
        return None


def _jax():
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        if jax.default_backend() != "gpu":
            return None
        return jax
    except Exception:
        return None


cupy = _cupy()
jax = _jax()


def synchronize() -> None:
    torch.cuda.synchronize()
    if cupy is not None:
        cupy.cuda.Device().synchronize()


def timed(func: Callable[[], object]) -> float:
    synchronize()
    start = time.perf_counter()
    result = func()
    if jax is not None:
        jax.block_until_ready(result)
    synchronize()
    return time.perf_counter() - start


def bench(name: str, floor: Callable[[], object], contenders: dict[str, Callable[[], object]],
          repeat: int) -> None:
    """Warm every contender, time them in turns and print medians and ratios."""
    everything = {"floor": floor, **contenders}
    for func in everything.values():
        timed(func)
        timed(func)
    times: dict[str, list[float]] = {k: [] for k in everything}
    for _ in range(repeat):
        for key, func in everything.items():
            times[key].append(timed(func))
    medians = {k: statistics.median(v) for k, v in times.items()}
    reference = medians["torch"]
    print(f"\n{name}: memory floor (read pass) {medians['floor'] * 1e3:.3f} ms")
    for key in contenders:
        m = medians[key]
        print(f"  {key:28s} {m * 1e3:9.3f} ms   torch/this {reference / m:6.2f}"
              f"   x floor {m / medians['floor']:7.1f}")


def cross_entropy_cases(repeat: int) -> None:
    n, c = 4096, 32000
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((n, c), dtype=np.float32)
    y_np = rng.integers(0, c, n)
    x, y = torch.from_numpy(x_np).cuda(), torch.from_numpy(y_np).cuda()
    forward = {"torch": lambda: F.cross_entropy(x, y),
               "anyloss on torch cuda": lambda: anyloss.cross_entropy(x, y)}
    xg = x.clone().requires_grad_(True)

    def torch_grad():
        loss = F.cross_entropy(xg, y)
        return torch.autograd.grad(loss, xg)

    both = {"torch": torch_grad,
            "anyloss on torch cuda": lambda: anyloss.cross_entropy_and_grad(x, y)}
    if cupy is not None:
        xc, yc = cupy.asarray(x_np), cupy.asarray(y_np)
        forward["anyloss on cupy"] = lambda: anyloss.cross_entropy(xc, yc)
        both["anyloss on cupy"] = lambda: anyloss.cross_entropy_and_grad(xc, yc)
    if jax is not None:
        xj, yj = jax.numpy.asarray(x_np), jax.numpy.asarray(y_np)
        forward["anyloss on jax gpu"] = lambda: anyloss.cross_entropy(xj, yj)
        both["anyloss on jax gpu"] = lambda: anyloss.cross_entropy_and_grad(xj, yj)
    bench(f"cross_entropy forward {n}x{c} float32", lambda: x.amax(), forward, repeat)
    bench(f"cross_entropy forward + gradient {n}x{c} float32", lambda: x.amax(), both, repeat)


def ctc_case(repeat: int) -> None:
    t, n, c, s = 500, 32, 64, 100
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((t, n, c)).astype(np.float32)
    lp_np = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    tg_np = rng.integers(1, c, (n, s))
    il_np, tl_np = np.full(n, t), np.full(n, s)
    lp, tg = torch.from_numpy(lp_np).cuda(), torch.from_numpy(tg_np).cuda()
    il, tl = torch.from_numpy(il_np).cuda(), torch.from_numpy(tl_np).cuda()
    contenders = {"torch": lambda: F.ctc_loss(lp, tg, il, tl),
                  "anyloss on torch cuda": lambda: anyloss.ctc_loss(lp, tg, il, tl)}
    if cupy is not None:
        args = [cupy.asarray(a) for a in (lp_np, tg_np, il_np, tl_np)]
        contenders["anyloss on cupy"] = lambda: anyloss.ctc_loss(*args)
    if jax is not None:
        jargs = [jax.numpy.asarray(a) for a in (lp_np, tg_np, il_np, tl_np)]
        contenders["anyloss on jax gpu"] = lambda: anyloss.ctc_loss(*jargs)
    bench(f"ctc_loss forward T={t} N={n} C={c} S={s} float32", lambda: lp.amax(), contenders,
          repeat)


def elementwise_cases(repeat: int) -> None:
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((2048, 4096), dtype=np.float32)
    b_np = rng.random((2048, 4096), dtype=np.float32)
    a, b = torch.from_numpy(a_np).cuda(), torch.from_numpy(b_np).cuda()
    for name in ("mse_loss", "binary_cross_entropy_with_logits"):
        ours, theirs = getattr(anyloss, name), getattr(F, name)
        contenders = {"torch": lambda t=theirs: t(a, b),
                      "anyloss on torch cuda": lambda o=ours: o(a, b)}
        if cupy is not None:
            ac, bc = cupy.asarray(a_np), cupy.asarray(b_np)
            contenders["anyloss on cupy"] = lambda o=ours, ac=ac, bc=bc: o(ac, bc)
        if jax is not None:
            aj, bj = jax.numpy.asarray(a_np), jax.numpy.asarray(b_np)
            contenders["anyloss on jax gpu"] = lambda o=ours, aj=aj, bj=bj: o(aj, bj)
        bench(f"{name} 2048x4096 float32", lambda: a.amax(), contenders, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA GPU visible to torch")
    versions = [f"torch {torch.__version__}"]
    if cupy is not None:
        versions.append(f"cupy {cupy.__version__}")
    if jax is not None:
        versions.append(f"jax {jax.__version__}")
    print(f"GPU: {torch.cuda.get_device_name()}, {', '.join(versions)}")
    cross_entropy_cases(args.repeat)
    ctc_case(args.repeat)
    elementwise_cases(args.repeat)


if __name__ == "__main__":
    main()
