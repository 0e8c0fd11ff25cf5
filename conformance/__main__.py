"""``python -m anyloss.conformance``: every loss on every installed library, side by side.

For one seeded ``'mean'`` case of each loss in the catalogue, prints the value
each installed array library computes in float64, and the largest relative
difference from the float64 reference. Exits non-zero when a library disagrees
with the reference by more than 1e-9 (relative) or fails to run.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

import anyloss
from anyloss.conformance import catalogue, namespaces

TOLERANCE = 1e-9


def first_mean_cases() -> list[catalogue.Case]:
    """One case per loss: the first whose reduction is ``'mean'``."""
    chosen: dict[str, catalogue.Case] = {}
    for case in catalogue.cases():
        if case.options.get("reduction") == "mean" and case.loss not in chosen:
            chosen[case.loss] = case
    return list(chosen.values())


def run_case(ns: namespaces.Namespace, case: catalogue.Case) -> float:
    arrays = {k: ns.from_numpy(a) for k, a in case.arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(ns.to_numpy(getattr(anyloss, case.loss)(**arrays, **case.options)))


def main() -> int:
    libraries = namespaces.available()
    references = catalogue.references()
    names = [ns.name for ns in libraries]
    width = max(14, *(len(n) for n in names))
    header = f"{'loss':<32}" + "".join(f"{n:>{width + 2}}" for n in names) + f"{'max rel err':>14}"
    print(header)
    print("-" * len(header))
    failures = 0
    for case in first_mean_cases():
        expected = float(references[case.loss](**case.arrays, **case.options))
        cells, worst = [], 0.0
        for ns in libraries:
            try:
                value = run_case(ns, case)
            except Exception as exc:  # report, keep going
                cells.append(f"{type(exc).__name__:>{width + 2}}")
                worst = math.inf
                continue
            cells.append(f"{value:>{width + 2}.10g}")
            worst = max(worst, abs(value - expected) / max(abs(expected), 1e-300))
        failures += not worst <= TOLERANCE
        print(f"{case.loss:<32}" + "".join(cells) + f"{worst:>14.2e}")
    missing = namespaces.unavailable()
    if missing:
        print("\nnot installed: " + ", ".join(sorted(missing)))
    print(f"\n{len(first_mean_cases()) - failures} losses agree to {TOLERANCE:g}, {failures} differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
