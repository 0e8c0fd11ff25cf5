"""Time every non-sequence loss of anyloss against ``torch.nn.functional``, in one run.

    python benchmarks/bench_generic.py [--rounds 9] [--only huber,mse] [--no-plot] [--replot]

Each loss runs on the same float32 data three ways: ``torch.nn.functional`` on
torch tensors (the reference), anyloss on the NumPy arrays, and anyloss on the
torch tensors (``torch.from_numpy``: the very same memory). Two sizes:

- large: 2048 x 4096 for the elementwise losses; class losses take (2048, 4096)
  logits with (2048,) targets, except the C^2 ``multilabel_margin_loss``, which
  takes (2048, 64) (its pairs form a 2048 x 64 x 64 array, the same 8M elements);
- small: 64 x 10, where the per-call overhead dominates.

Rounds are interleaved (every contender of every loss runs once per round, in an
order that rotates from round to round), so that a busy machine slows all of
them alike; the figures are medians over the rounds. A large-case timing makes
as many calls as take torch some 5 ms (one for most losses; about a hundred for
``nll_loss``, which reads 2048 values). Where anyloss hands torch inputs to a
torch loss kernel (the records of ``anyloss._registry``: cross entropy, nll and
the class margin losses), the same losses are timed again with the loss kernels
off, so that anyloss's own formula on torch is on record too. That run uses the
fast-path level ``'blocks'``: the loss kernels are off but torch's building
blocks stay on, as the old ``fast_paths(False)`` had it (``fast_paths(False)``
now turns the building blocks off as well, leaving the written-once array-API
code alone). Printed: the machine (CPU, SIMD level, versions), per loss and
backend the ratio torch_time / anyloss_time (> 1: anyloss is faster), the
memory floor of each large case (one read pass, ``a.max()``, over every input
array, timed like the contenders) with anyloss's time as a multiple of it, the
geometric means, and the small case's overhead (anyloss - torch) in
microseconds. With matplotlib installed, a bar plot of the ratios is written to
``benchmarks/results/generic_ratios.png`` and copied to
``benchmarks/generic_ratios.png`` (the README's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss
from anyloss._registry import libraries

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

LARGE = (2048, 4096)
SMALL = (64, 10)
#: Classes of multilabel_margin_loss in the large case (its work grows as C^2).
MULTILABEL_MARGIN_CLASSES = 64
#: The memory floor's contender: one read pass (``a.max()``) over every input array.
READ_PASS = "read-pass"


@dataclass
class Case:
    name: str
    args: tuple  # NumPy arrays (or Python numbers), positional
    kwargs: dict


def _cases(shape: tuple[int, int], seed: int = 0) -> list[Case]:
    """One call of each loss on float32 data of ``shape`` (rows, columns)."""
    g = np.random.default_rng(seed)
    n, d = shape

    def normal(*s):
        return g.standard_normal(s).astype(np.float32)

    def signs(*s):
        return np.where(g.random(s) < 0.5, -1.0, 1.0).astype(np.float32)

    x, y = normal(n, d), normal(n, d)
    logits = normal(n, d)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    probs = np.exp(normal(n, d))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    classes = g.integers(0, d, n)
    unit = g.uniform(0.01, 0.99, (n, d)).astype(np.float32)
    # multilabel_margin: C classes, each row lists up to C/8 of them, then -1.
    c = min(MULTILABEL_MARGIN_CLASSES, d)
    mlm_x = normal(n, c)
    mlm_t = np.argsort(g.random((n, c)), axis=1)
    listed = g.integers(1, max(2, c // 8) + 1, (n, 1))
    mlm_t = np.where(np.arange(c) < listed, mlm_t, -1).astype(np.int64)
    return [
        Case("l1_loss", (x, y), {}),
        Case("mse_loss", (x, y), {}),
        Case("huber_loss", (x, y), {}),
        Case("smooth_l1_loss", (x, y), {}),
        Case("soft_margin_loss", (x, signs(n, d)), {}),
        Case("hinge_embedding_loss", (x, signs(n, d)), {}),
        Case("margin_ranking_loss", (x, y, signs(n, d)), {}),
        Case("multilabel_soft_margin_loss", (x, (g.random((n, d)) < 0.5).astype(np.float32)), {}),
        Case("multilabel_margin_loss", (mlm_x, mlm_t), {}),
        Case("multi_margin_loss", (x, classes), {}),
        Case("kl_div", (log_probs, probs), {"reduction": "batchmean"}),
        Case("poisson_nll_loss", (x, np.floor(np.exp(y)).astype(np.float32)), {}),
        Case("gaussian_nll_loss", (x, y, unit), {}),
        Case("cosine_embedding_loss", (x, y, signs(n)), {}),
        Case("triplet_margin_loss", (x, y, normal(n, d)), {}),
        Case("triplet_margin_with_distance_loss", (x, y, normal(n, d)), {}),
        Case("nll_loss", (log_probs, classes), {}),
        Case("cross_entropy", (logits, classes), {}),
        Case("binary_cross_entropy", (unit, g.random((n, d)).astype(np.float32)), {}),
        Case("binary_cross_entropy_with_logits", (x, g.random((n, d)).astype(np.float32)), {}),
    ]


def _contenders(case: Case, generic_torch: bool = False) -> dict[str, Callable[[], object]]:
    tensors = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in case.args)
    native = getattr(F, case.name)
    ours = getattr(anyloss, case.name)
    kw = case.kwargs
    calls = {
        "torch": lambda: native(*tensors, **kw),
        "numpy": lambda: ours(*case.args, **kw),
        "anyloss-torch": lambda: ours(*tensors, **kw),
    }
    if generic_torch and "torch" in libraries(case.name):
        def generic():
            # Loss kernels off, torch's building blocks on (False would turn those off too).
            with anyloss.fast_paths("blocks"):
                return ours(*tensors, **kw)

        calls["torch-generic"] = generic
    arrays = [a for a in case.args if isinstance(a, np.ndarray)]
    calls[READ_PASS] = lambda: [a.max() for a in arrays]
    return calls


def _check(case: Case, calls: dict) -> None:
    """The three contenders agree (float32: loose tolerance), so we time the same thing."""
    ref = float(calls["torch"]())
    for name in (k for k in calls if k not in ("torch", READ_PASS)):
        got = float(calls[name]())
        if not math.isclose(got, ref, rel_tol=2e-3, abs_tol=1e-5):
            raise AssertionError(f"{case.name} on {name}: {got} != torch's {ref}")


def _time(func: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        func()
    return (time.perf_counter() - start) / number


def measure(cases: list[Case], rounds: int, number: int | None,
            generic_torch: bool = False) -> dict[str, dict[str, float]]:
    """Median seconds per call, {loss: {contender: seconds}}, over interleaved rounds.

    ``number`` calls per timing; ``None`` picks, per loss, enough calls for some
    5 ms (from a timed warm-up of the torch call), so that a loss of a few
    microseconds is not timed by one call. With ``generic_torch``, the losses
    that have a loss kernel on torch are also timed on torch inputs with the loss
    kernels off (level ``'blocks'``; contender ``"torch-generic"``): anyloss's own
    formula on torch's building blocks. Contender ``"read-pass"`` is the memory
    floor: one read pass over the inputs.
    """
    plans = {c.name: _contenders(c, generic_torch) for c in cases}
    numbers = {}
    for case in cases:
        _check(case, plans[case.name])
        for func in plans[case.name].values():  # warm up
            func()
        numbers[case.name] = number or max(1, round(0.005 / _time(plans[case.name]["torch"], 1)))
    samples = {name: {k: [] for k in calls} for name, calls in plans.items()}
    for r in range(rounds):
        for name, calls in plans.items():
            order = list(calls)
            order = order[r % len(order):] + order[: r % len(order)]
            for who in order:
                samples[name][who].append(_time(calls[who], numbers[name]))
    return {name: {k: statistics.median(v) for k, v in per.items()}
            for name, per in samples.items()}


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _plot(ratios: dict[str, dict[str, float]], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    names = list(ratios)
    ypos = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.36 * len(names) + 1.6))
    height = 0.38
    for k, (backend, colour) in enumerate((("numpy", "#4c72b0"), ("anyloss-torch", "#dd8452"))):
        values = [ratios[n][backend] for n in names]
        label = "NumPy inputs" if backend == "numpy" else "torch inputs"
        # Bars grow from 1 (parity) to the ratio, left for slower, right for faster.
        ax.barh(ypos + (k - 0.5) * height, [v - 1.0 for v in values], height, left=1.0,
                label=label, color=colour)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.axvline(0.6, color="grey", lw=0.8, ls=":", label="0.6 (the issue's floor)")
    ax.set_yticks(ypos, [n.replace("_loss", "") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("torch time / anyloss time  (> 1: anyloss faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "generic_ratios.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    shutil.copyfile(path, os.path.join(HERE, "generic_ratios.png"))
    print(f"plot: {path} (copied to benchmarks/generic_ratios.png)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    parser.add_argument("--small-number", type=int, default=200,
                        help="calls per timing in the small case")
    parser.add_argument("--only", default="", help="comma-separated substrings of loss names")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the plot from the last run's results/generic.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    if args.replot:
        with open(os.path.join(RESULTS, "generic.json")) as f:
            saved = json.load(f)
        ratios = {name: {b: t["torch"] / t[b] for b in ("numpy", "anyloss-torch")}
                  for name, t in saved["large_seconds"].items()}
        _plot(ratios, _title(saved["machine"], saved["date"]))
        return 0

    def chosen(cases):
        keys = [k for k in args.only.split(",") if k]
        return [c for c in cases if not keys or any(k in c.name for k in keys)]

    print(machine_line(), flush=True)
    load_before = os.getloadavg()[0]
    large = measure(chosen(_cases(LARGE)), args.rounds, None, generic_torch=True)
    small = {} if args.skip_small else measure(chosen(_cases(SMALL)), args.rounds,
                                               args.small_number, generic_torch=True)
    machine = (f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
               f" torch {torch.__version__} ({torch.get_num_threads()} threads), "
               f"numpy {np.__version__}")
    date = datetime.date.today().isoformat()
    print(f"anyloss vs torch.nn.functional, float32, median of {args.rounds} interleaved rounds")
    print(f"{machine}; {date}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (other processes slow the 2-thread torch calls most)")
    print(f"large: {LARGE[0]}x{LARGE[1]} (multilabel_margin: {LARGE[0]}x"
          f"{MULTILABEL_MARGIN_CLASSES}); small: {SMALL[0]}x{SMALL[1]}; memory floor: one "
          f"read pass (a.max()) over each input array; np/floor, t/floor: anyloss's time "
          f"as a multiple of it")
    header = (f"{'loss':34s} {'torch ms':>9s} {'numpy ms':>9s} {'a-torch ms':>10s} "
              f"{'ratio np':>8s} {'ratio t':>8s} {'floor ms':>8s} {'np/floor':>8s} "
              f"{'t/floor':>7s}")
    if small:
        header += f" {'small +us np':>12s} {'+us torch':>10s}"
    print(header)
    ratios = {}
    for name, t in large.items():
        ratios[name] = {b: t["torch"] / t[b] for b in ("numpy", "anyloss-torch")}
        line = (f"{name:34s} {t['torch'] * 1e3:9.2f} {t['numpy'] * 1e3:9.2f} "
                f"{t['anyloss-torch'] * 1e3:10.2f} {ratios[name]['numpy']:8.2f} "
                f"{ratios[name]['anyloss-torch']:8.2f} {t[READ_PASS] * 1e3:8.2f} "
                f"{t['numpy'] / t[READ_PASS]:8.2f} {t['anyloss-torch'] / t[READ_PASS]:7.2f}")
        if small:
            s = small[name]
            line += (f" {(s['numpy'] - s['torch']) * 1e6:12.1f}"
                     f" {(s['anyloss-torch'] - s['torch']) * 1e6:10.1f}")
        print(line)
    g_np = _geomean(r["numpy"] for r in ratios.values())
    g_t = _geomean(r["anyloss-torch"] for r in ratios.values())
    low = min((r[b], n, b) for n, r in ratios.items() for b in r)
    print(f"geometric mean of torch/anyloss: numpy inputs {g_np:.2f}, torch inputs {g_t:.2f}; "
          f"lowest {low[0]:.2f} ({low[1]}, {low[2]})")
    generic = [name for name, t in large.items() if "torch-generic" in t]
    if generic:
        print("torch inputs with loss kernels off, building blocks on (fast_paths('blocks'): "
              "anyloss's own formula, where the line above times torch's kernel or a delegate):")
        for name in generic:
            t = large[name]
            line = (f"  {name:32s} {t['torch-generic'] * 1e3:9.2f} ms, ratio "
                    f"{t['torch'] / t['torch-generic']:.2f}")
            if small:
                overhead = small[name]["torch-generic"] - small[name]["torch"]
                line += f"; small +{overhead * 1e6:.1f} us"
            print(line)
    if small:
        over = {b: [s[b] - s["torch"] for s in small.values()] for b in ("numpy", "anyloss-torch")}
        print("small-case overhead anyloss - torch, us: "
              + ", ".join(f"{'numpy' if b == 'numpy' else 'torch'} inputs median "
                          f"{statistics.median(v) * 1e6:.1f} max {max(v) * 1e6:.1f}"
                          for b, v in over.items()))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "generic.json"), "w") as f:
        json.dump({"machine": machine, "machine_line": machine_line(), "date": date,
                   "rounds": args.rounds,
                   "large_seconds": large, "small_seconds": small}, f, indent=1)
    if not args.no_plot:
        _plot(ratios, _title(machine, date))
    return 0


def _title(machine: str, date: str) -> str:
    return (f"anyloss vs torch.nn.functional, {LARGE[0]}x{LARGE[1]} float32; "
            f"{machine.split(',')[0]}; {date}")


if __name__ == "__main__":
    sys.exit(main())
