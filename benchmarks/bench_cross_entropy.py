"""Time anyloss.cross_entropy (NumPy fast path) against torch's CPU F.cross_entropy, in one run.

    python benchmarks/bench_cross_entropy.py [--repeat 7] [--shapes 4096x32000,1024x128256]
        [--float64-shapes 1024x32000] [--options-shapes 4096x32000] [--threads N]
        [--pad-to M] [--probability-shapes 2048x32000]

For each shape (float32 logits, int64 class indices, reduction 'mean'; the
``--float64-shapes`` in float64; the ``--options-shapes`` with every class-index
option at once: class weights, label smoothing 0.1 and every 8th target
ignored), each round times anyloss and the memory floors (below) once each, in
turn, so that a busy machine slows all of them alike; then the other contenders
(torch, JAX) are timed the same way, in rounds of their own: on some virtual
machines a call of torch's forward + gradient makes the page faults of the next
call that writes fresh memory take up to 0.8 s more (``benchmarks/README.md``),
which no longer lands on anyloss's samples or its floors. Printed: the median
time of each, the ratio torch time / contender time (> 1: faster than torch) for
the forward pass and for forward + gradient,
with an optax-style ``jax.jit(logsumexp(x) - x[y])`` column when JAX is
installed, and the peak memory each needs beyond its input (RSS high-water
mark, and tracemalloc for anyloss), as a share of the input's size; for the
gradient, beyond the gradient output as well. Beside them: the machine (CPU,
SIMD level, versions, numba's LLVM target) and the memory floors, timed in
anyloss's rounds: one read pass over the logits (``x.max()``) for the forward pass,
one read plus one write (``np.negative(x, out=buf)``) for forward + gradient,
with each contender's time as a multiple of its floor ("x floor"; for the
gradient also of the read pass, "x read", and of one read plus one write into a
new array, "x new", on one thread or with the rows split among as many threads as
anyloss uses, whichever is faster: every contender returns its gradient in fresh
memory, whose page faults that floor pays as well). ``--threads N`` runs anyloss's
kernels and torch on N threads each (``--threads 1``: the serial copies of the kernels,
which every Dask chunk runs). ``--pad-to M`` gives every contender the logits as
``wide[:, :C]`` of an array whose rows are padded to a multiple of ``M`` columns (a
vocabulary padded to a multiple of 64, say, and sliced back): rows apart, columns
adjacent. The ``--probability-shapes`` (float32; ``NxC`` or K-dimensional
``NxCxd1x...``, such as ``16x21x16384`` for a segmentation map of soft labels) have a
target of class probabilities (each sum over the classes 1) instead of indices; their
floors read it too.
``--repeat 3 --shapes 512x1000 --float64-shapes '' --options-shapes ''
--probability-shapes ''`` is a quick try.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import statistics
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss
from anyloss.backends.numpy import compiled

_POOL = ThreadPoolExecutor(max(1, anyloss.get_threads()))

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


def contenders(x: np.ndarray, target: np.ndarray, options: dict):
    t_x, t_target = torch.from_numpy(x), torch.from_numpy(target)
    weight = options.get("weight")
    t_options = dict(options)
    if weight is not None:
        t_options["weight"] = torch.from_numpy(weight)

    def torch_forward():
        return F.cross_entropy(t_x, t_target, **t_options)

    def torch_grad():
        leaf = t_x.detach().requires_grad_(True)
        loss = F.cross_entropy(leaf, t_target, **t_options)
        loss.backward()
        return loss.detach(), leaf.grad

    forward = {"torch": torch_forward,
               "anyloss": lambda: anyloss.cross_entropy(x, target, **options)}
    grad = {"torch": torch_grad,
            "anyloss": lambda: anyloss.cross_entropy_and_grad(x, target, **options)}
    if jax is not None and not options and target.dtype.kind == "i":
        j_x, j_target = jax.device_put(x), jax.device_put(target.astype(np.int32))

        def optax_style(logits, labels):
            picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)

        jit_loss = jax.jit(optax_style)
        jit_grad = jax.jit(jax.value_and_grad(optax_style))
        forward["jax.jit"] = lambda: jit_loss(j_x, j_target).block_until_ready()
        grad["jax.jit"] = lambda: jax.block_until_ready(jit_grad(j_x, j_target))
    return forward, grad


#: The least time of one sample: calls faster than this are timed this many at a time (at
#: 64 x 10 a call takes microseconds, which one call's timing cannot resolve).
SAMPLE_SECONDS = 2e-3


def _calls_per_sample(f) -> int:
    start = time.perf_counter()
    f()
    return max(1, int(SAMPLE_SECONDS / max(time.perf_counter() - start, 1e-9)))


def time_side_by_side(funcs: dict, repeat: int) -> dict:
    """Median seconds of a call of each function, the functions interleaved in each of
    ``repeat`` rounds; a sample takes at least :data:`SAMPLE_SECONDS` (several calls)."""
    for f in funcs.values():  # warm up: compile, pools, scratch buffers
        f()
    calls = {name: _calls_per_sample(f) for name, f in funcs.items()}
    times = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, f in funcs.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                f()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def check_agreement(x, target, options) -> float:
    got = float(anyloss.cross_entropy(x, target, **options))
    t_options = dict(options)
    if "weight" in options:
        t_options["weight"] = torch.from_numpy(options["weight"])
    expected = float(F.cross_entropy(torch.from_numpy(x), torch.from_numpy(target),
                                     **t_options))
    return abs(got - expected) / abs(expected)


def report(shape, repeat: int, dtype=np.float32, with_options: bool = False,
           pad_to: int = 0, probabilities: bool = False) -> None:
    n, c, *positions = shape  # (N, C, d1, ...): probabilities only
    if positions and not probabilities:
        raise SystemExit(f"{shape}: only --probability-shapes take (N, C, d1, ...)")
    g = np.random.default_rng(0)
    width = -(-c // pad_to) * pad_to if pad_to and not positions else c
    if positions:
        x = g.standard_normal(shape).astype(dtype)
    else:
        x = g.standard_normal((n, width)).astype(dtype)[:, :c]
    target = g.integers(0, c, n)
    if probabilities:
        target = g.random(shape).astype(dtype)
        target /= target.sum(axis=1, keepdims=True)
    options = {}
    if with_options:
        target[::8] = -100
        options = {"weight": g.uniform(0.5, 2.0, c).astype(dtype), "label_smoothing": 0.1,
                   "ignore_index": -100}
    forward, grad = contenders(x, target, options)
    size = x.nbytes
    buf = np.empty_like(x)
    print(f"\n({'N, C, ...' if positions else 'N, C'}) = {tuple(shape)} {np.dtype(dtype).name}"
          f"{', weight + label_smoothing + ignore_index' if with_options else ''}"
          f"{f', x[:, :{c}] of rows of {width}' if width != c else ''}"
          f"{', class probabilities' if probabilities else ''}, "
          f"input {size / 2**20:.0f} MiB, relative difference anyloss vs torch: "
          f"{check_agreement(x, target, options):.1e}")
    print(f"{'':28s}{'median ms':>10s} {'torch/this':>11s} {'peak extra RSS':>16s} "
          f"{'x floor':>8s} {'x read':>7s} {'x new':>6s}")
    # Probability targets are read too: each floor reads them once more.
    also = target.max if probabilities else (lambda: None)
    for label, funcs, output in (("forward", forward, 0), ("forward+gradient", grad, size)):
        # The memory floors, timed in the same rounds: one read pass over the input; for
        # the gradient also one read plus one write of the input's size.
        floors = {"read pass": lambda: (x.max(), also())}
        if output:
            floors["read+write pass"] = lambda: (np.negative(x, out=buf), also())
            # The same into a new array: the page faults of a fresh output, which every
            # contender's gradient pays too.
            floors["read+new write"] = lambda: (np.negative(x), also())
            floors["read+new write, threads"] = lambda: (negative_threads(x), also())
        # anyloss with its floors, then the other contenders in rounds of their own (see the
        # module's docstring).
        medians = time_side_by_side({"anyloss": funcs["anyloss"], **floors}, repeat)
        medians |= time_side_by_side({k: f for k, f in funcs.items() if k != "anyloss"}, repeat)
        read = medians["read pass"]
        floor = medians["read+write pass" if output else "read pass"]
        if output:
            new_floor = min(medians["read+new write"], medians["read+new write, threads"])
        for name, f in funcs.items():
            rss = peak_rss_extra(f)
            rss_text = "n/a" if rss is None else f"{max(rss - output, 0) / size:6.1%}"
            ratio = medians["torch"] / medians[name]
            new = f"{medians[name] / new_floor:5.2f}x" if output else ""
            print(f"  {label + ' ' + name:26s}{medians[name] * 1e3:10.1f} {ratio:10.2f}x "
                  f"{rss_text:>16s} {medians[name] / floor:7.2f}x {medians[name] / read:6.2f}x "
                  f"{new}")
        print(f"  {label + ' read pass':26s}{read * 1e3:10.2f}   "
              f"(the memory floor: x.max(){' and target.max()' if probabilities else ''})")
        if output:
            print(f"  {label + ' read+write':26s}{floor * 1e3:10.2f}   "
                  "(the memory floor: np.negative(x, out=buf))")
            print(f"  {label + ' read+new write':26s}{medians['read+new write'] * 1e3:10.2f}   "
                  "(np.negative(x): the same into a new array, page faults included)")
            threaded = medians["read+new write, threads"]
            print(f"  {label + ' read+new write':26s}{threaded * 1e3:10.2f}   "
                  f"(the same, row parts on {anyloss.get_threads()} threads; the faster of "
                  "the two is the 'x new' floor)")
        traced = tracemalloc_extra(funcs["anyloss"])
        print(f"  {label + ' anyloss tracemalloc peak beyond input':>58s}"
              f"{'' if not output else ' and gradient'}: {traced / size:.2%}")


def negative_threads(x: np.ndarray) -> np.ndarray:
    """``-x`` into a new array, its rows split among ``anyloss.get_threads()`` threads (NumPy
    releases the GIL): one read plus one write into fresh memory, as a parallel kernel
    returning a new gradient does it."""
    out = np.empty_like(x)
    bounds = np.linspace(0, x.shape[0], anyloss.get_threads() + 1).astype(int)
    parts = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    list(_POOL.map(lambda part: np.negative(x[part], out=out[part]), parts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--shapes", default="4096x32000,1024x128256")
    parser.add_argument("--float64-shapes", default="1024x32000")
    parser.add_argument("--options-shapes", default="4096x32000")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of anyloss's kernels and of torch (default: each "
                             "library's own setting)")
    parser.add_argument("--probability-shapes", default="2048x32000")
    parser.add_argument("--pad-to", type=int, default=0,
                        help="the logits as x[:, :C] of rows padded to a multiple of this "
                             "many columns (default: C-contiguous logits)")
    args = parser.parse_args()
    if args.threads is not None:
        anyloss.set_threads(args.threads)
        torch.set_num_threads(args.threads)

    def parse(text):
        return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s]

    print(machine_line())
    print(f"compiled engine: {compiled.describe()}")
    print(f"{datetime.date.today()}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), numpy {np.__version__}"
          + (f", jax {jax.__version__}" if jax is not None else ""))
    print("ratio = torch median / contender median (> 1: faster than torch); peak extra RSS "
          "as a share of the input (for the gradient: beyond the gradient output); x floor = "
          "median / the memory floor (forward: one read pass over the input; gradient: one "
          "read plus one write); x read = median / the read pass")
    for shape in parse(args.shapes):
        report(shape, args.repeat, pad_to=args.pad_to)
    for shape in parse(args.float64_shapes):
        report(shape, args.repeat, np.float64, pad_to=args.pad_to)
    for shape in parse(args.options_shapes):
        report(shape, args.repeat, with_options=True, pad_to=args.pad_to)
    for shape in parse(args.probability_shapes):
        report(shape, args.repeat, pad_to=args.pad_to, probabilities=True)


if __name__ == "__main__":
    main()
