"""Time the compiled kernels' own elementary functions against NumPy's and torch's, per core.

    python benchmarks/bench_elementary.py [--size 16000000] [--repeat 7]

For each function and dtype, on the same array, interleaved round by round (medians
printed): NumPy's ufunc with ``out=``, torch's with ``out=`` (one thread, where it has the
function), and a serial numba loop over :mod:`anyloss.backends.numpy.compiled.elementary`
(one thread: this compares the per-core code, whatever each library's threading). The
memory floor is one read pass over the input (``x.max()``), and every time is also shown
as a multiple of it. NumPy's SIMD ``exp``/``log`` exist only for some CPU levels and
dtypes; the compiled loops vectorise on any x86-64 or ARM CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _machine import machine_line

from anyloss.backends.numpy.compiled import elementary


def _inputs(name, dtype, size):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(size) * 5).astype(dtype)
    if name in ("log", "log1p"):
        x = np.abs(x)
    return x


def _contenders(name, x, out):
    import torch

    xt, ot = torch.from_numpy(x), torch.from_numpy(out)
    numpy_functions = {
        "exp": lambda: np.exp(x, out=out),
        "log": lambda: np.log(x, out=out),
        "log1p": lambda: np.log1p(x, out=out),
        "softplus": lambda: np.logaddexp(x.dtype.type(0), x, out=out),
        "log1p_exp_neg_abs": lambda: np.log1p(np.exp(-np.abs(x)), out=out),
        "logaddexp": lambda: np.logaddexp(x, x[::-1], out=out),
    }
    torch_functions = {
        "exp": lambda: torch.exp(xt, out=ot),
        "log": lambda: torch.log(xt, out=ot),
        "log1p": lambda: torch.log1p(xt, out=ot),
        "softplus": lambda: torch.nn.functional.softplus(xt),
        "logaddexp": lambda: torch.logaddexp(xt, xt.flip(0), out=ot),
    }
    loop = elementary.FUNCTIONS[name]
    reversed_x = np.ascontiguousarray(x[::-1])
    ours = ((lambda: loop(x, reversed_x, out)) if name == "logaddexp"
            else (lambda: loop(x, out)))
    timed = {"floor": lambda: x.max(), "numpy": numpy_functions[name], "anyloss": ours}
    if name in torch_functions:
        timed["torch"] = torch_functions[name]
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(machine_line())
    print(f"{args.size} values, median of {args.repeat} interleaved rounds, one thread each; "
          "x floor = time / one read pass (x.max())")
    print(f"{'function':<20}{'dtype':<9}{'numpy ms':>10}{'torch ms':>10}{'anyloss ms':>12}"
          f"{'numpy/any':>11}{'torch/any':>11}{'any x floor':>13}")
    for name in elementary.FUNCTIONS:
        for dtype in (np.float32, np.float64):
            x = _inputs(name, dtype, args.size)
            out = np.empty_like(x)
            timed = _contenders(name, x, out)
            for f in timed.values():  # compile and warm
                f()
            times: dict[str, list[float]] = {k: [] for k in timed}
            for r in range(args.repeat):
                keys = list(timed)
                for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                    start = time.perf_counter()
                    timed[k]()
                    times[k].append(time.perf_counter() - start)
            m = {k: statistics.median(v) for k, v in times.items()}
            torch_ms = f"{m['torch'] * 1e3:10.2f}" if "torch" in m else f"{'-':>10}"
            torch_ratio = f"{m['torch'] / m['anyloss']:11.2f}" if "torch" in m else f"{'-':>11}"
            print(f"{name:<20}{np.dtype(dtype).name:<9}{m['numpy'] * 1e3:10.2f}{torch_ms}"
                  f"{m['anyloss'] * 1e3:12.2f}{m['numpy'] / m['anyloss']:11.2f}{torch_ratio}"
                  f"{m['anyloss'] / m['floor']:13.2f}")


if __name__ == "__main__":
    main()
