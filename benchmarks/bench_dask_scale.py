"""anyloss on Dask arrays larger than memory: time and peak resident memory.

    python benchmarks/bench_dask_scale.py [--scale 0.01] [--chunk-rows 10000] [--workers N]

At ``--scale 1`` (the default):

- ``mse_loss``, ``l1_loss`` and ``binary_cross_entropy_with_logits`` over
  2 x 10^9 float32 elements (input and target of shape (2_000_000, 1000): 8 GB
  each, were they ever held in memory);
- ``cross_entropy`` over 10^7 rows x 1000 classes of float32 logits (40 GB) and
  10^7 int64 class indices.

The data are generated lazily, chunk by chunk, with ``dask.array.random``, so
nothing but a few chunks per worker thread is ever resident. anyloss builds the
graph (no compute happens inside a loss); ``.compute()`` runs it on Dask's
threaded scheduler. A sampling thread records the process's resident set size
(psutil, every 20 ms) during each compute; the process-wide peak from
``resource.getrusage`` is printed at the end. ``--scale`` multiplies the number
of rows (0.01 for a one-minute try).

Each result is printed beside the value it should approach for this data
(mse of two standard normals -> 2, l1 -> 2/sqrt(pi), ...), a check that the
whole array was seen.

First come a line on the machine (CPU, SIMD level, versions) and the memory
floor: the mean of one lazily generated (2_000_000 * scale, 1000) input, i.e.
generating and reading it once, which every loss below does at least once per
input array; each loss's time is printed as a multiple of the floor's time for
as many elements. ``--no-floor`` skips it.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import threading
import time

import dask
import dask.array as da
import numpy as np
from _machine import machine_line

import anyloss

try:
    import psutil
except ImportError:  # pragma: no cover - the getrusage peak is still printed
    psutil = None

CLASSES = 1000
ELEMENTWISE_ROWS = 2_000_000  # x 1000 columns = 2e9 elements
CROSS_ENTROPY_ROWS = 10_000_000


class PeakRSS:
    """Largest resident set size seen while the ``with`` block runs (sampled)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self):
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        if psutil is not None:
            self.peak = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if psutil is not None:
            self._stop.set()
            self._thread.join()


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def _getrusage_peak() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run(name: str, build, expected: float, n_elements: int,
        floor_per_element: float | None = None) -> tuple[float, float]:
    """Build the graph (timed apart), compute it, print time, peak RSS and the value;
    with ``floor_per_element``, also the time as a multiple of the memory floor's."""
    start = time.perf_counter()
    with dask.config.set(scheduler="sync"):
        # Building must not compute anything; a compute here would run on "sync" and
        # take minutes, which the build time would show.
        lazy = build()
    built = time.perf_counter() - start
    with PeakRSS() as rss:
        start = time.perf_counter()
        value = float(lazy.compute())
        seconds = time.perf_counter() - start
    rate = n_elements / seconds / 1e6
    peak = _gib(rss.peak) if psutil is not None else "n/a (pip install psutil)"
    print(f"{name:34s} {seconds:8.1f} s  {rate:7.0f} M elements/s  peak RSS {peak:>10s}  "
          f"value {value:.6f} (expected ~{expected:.4f}; graph built in {built * 1e3:.0f} ms)"
          + (f"  {seconds / (floor_per_element * n_elements):.1f}x the floor"
             if floor_per_element else ""),
          flush=True)
    return seconds, rss.peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full row counts (default 1)")
    parser.add_argument("--chunk-rows", type=int, default=10_000,
                        help="rows per chunk (x 1000 columns; default 10000 = 40 MB float32)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="threads of Dask's scheduler (default: the CPU count)")
    parser.add_argument("--only", default="", help="comma-separated substrings of loss names")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the memory floor (generating and reading one input)")
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    dask.config.set(scheduler="threads", num_workers=args.workers)

    rows = max(1, int(ELEMENTWISE_ROWS * args.scale))
    ce_rows = max(1, int(CROSS_ENTROPY_ROWS * args.scale))
    chunks = (min(args.chunk_rows, rows), CLASSES)
    ce_chunks = (min(args.chunk_rows, ce_rows), CLASSES)
    n = rows * CLASSES
    print(f"anyloss {anyloss.__version__} on dask {dask.__version__}, {args.workers} threads, "
          f"scale {args.scale:g}")
    print(f"elementwise: ({rows}, {CLASSES}) float32 = {n:.3g} elements, chunks {chunks}; "
          f"cross_entropy: ({ce_rows}, {CLASSES}) float32 logits, chunks {ce_chunks}")

    def normal(seed, shape, chunk):
        return da.random.default_rng(seed).standard_normal(shape, dtype=np.float32, chunks=chunk)

    def uniform(seed, shape, chunk):
        return da.random.default_rng(seed).random(shape, dtype=np.float32, chunks=chunk)

    # Expected values for this data: x, y ~ N(0, 1); t ~ U(0, 1).
    bce_expected = _expected_bce_with_logits()
    cases = [
        ("mse_loss", lambda: anyloss.mse_loss(normal(1, (rows, CLASSES), chunks),
                                              normal(2, (rows, CLASSES), chunks)), 2.0, n),
        ("l1_loss", lambda: anyloss.l1_loss(normal(1, (rows, CLASSES), chunks),
                                            normal(2, (rows, CLASSES), chunks)),
         2 / math.sqrt(math.pi), n),
        ("binary_cross_entropy_with_logits",
         lambda: anyloss.binary_cross_entropy_with_logits(normal(1, (rows, CLASSES), chunks),
                                                          uniform(3, (rows, CLASSES), chunks)),
         bce_expected, n),
        ("cross_entropy",
         lambda: anyloss.cross_entropy(
             normal(4, (ce_rows, CLASSES), ce_chunks),
             da.random.default_rng(5).integers(0, CLASSES, size=ce_rows, chunks=ce_chunks[0])),
         _expected_cross_entropy(), ce_rows * CLASSES),
    ]
    keys = [k for k in args.only.split(",") if k]
    floor = None
    if not args.no_floor:
        seconds, _ = run("memory floor (generate + mean)",
                         lambda: normal(1, (rows, CLASSES), chunks).mean(), 0.0, n)
        floor = seconds / n
    total = 0.0
    for name, build, expected, count in cases:
        if keys and not any(k in name for k in keys):
            continue
        seconds, _ = run(name, build, expected, count, floor)
        total += seconds
    print(f"total compute {total:.1f} s; process peak RSS (getrusage) {_gib(_getrusage_peak())}")
    return 0


def _expected_bce_with_logits() -> float:
    """E[(1 - t) x + softplus(-x)] for x ~ N(0, 1), t ~ U(0, 1): E[softplus(-x)] (E[x] = 0)."""
    x = np.random.default_rng(0).standard_normal(2_000_000)
    return float(np.mean(np.logaddexp(0.0, -x)))


def _expected_cross_entropy() -> float:
    """E[logsumexp(x) - x_y] for 1000 N(0, 1) logits: about log(1000) + 1/2."""
    return math.log(CLASSES) + 0.5


if __name__ == "__main__":
    sys.exit(main())
