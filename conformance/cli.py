"""The ``anyloss`` command: ``anyloss conformance``, ``anyloss info`` and ``anyloss compile``.

``anyloss conformance`` runs the catalogue (:mod:`~anyloss.conformance.runner`)
on every installed array library, or on the ones named with ``--backend``, or
on any importable array API module named with ``--namespace``; prints a table
of loss × library (cases passed, worst relative error), the failures, the
largest cross-library spread and a summary line; and exits 1 on any failure.
``--json FILE`` writes every outcome for a CI to read. ``--blame`` names, for a
failing library, the array API function at fault (:mod:`~anyloss.conformance.blame`),
in the text and in the JSON. A progress bar is drawn
on stderr when it is a terminal, and nothing extra is printed when it is not.

``anyloss info`` lists the array libraries, their versions and devices, and
the kernels the registry (:mod:`anyloss._registry`) has for each; ``anyloss
info --markdown`` prints the README's fast-path tables from the same registry.

``anyloss compile`` compiles the NumPy engine's numba kernels into numba's
on-disk cache now, rather than on their first calls
(:mod:`anyloss.backends.numpy.precompile`): for container images and CI runners.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from . import blame, namespaces, runner
from .tolerances import FLUSHING_SLACK, TOLERANCES

__all__ = ["main"]

#: Failures listed in full before the rest are only counted.
MAX_LISTED_FAILURES = 25


def _progress_bar(stream: TextIO):
    """A callback drawing a one-line progress bar on ``stream``, or None if it is no terminal."""
    if not stream.isatty():
        return None

    def draw(done: int, total: int) -> None:
        width = 40
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            stream.write("\r" + " " * (width + 24) + "\r")
        stream.flush()

    return draw


def _format_table(report: runner.Report) -> list[str]:
    backends = report.backends
    width = max(18, *(len(b) + 2 for b in backends))
    lines = [
        "cases passed / run, and the worst error as a fraction of its dtype's tolerance:",
        "",
        f"{'loss':<34}" + "".join(f"{b:>{width}}" for b in backends),
    ]
    lines.append("-" * len(lines[-1]))
    for loss, row in report.table().items():
        cells = []
        for backend in backends:
            if backend not in row:
                cells.append(f"{'-':>{width}}")
                continue
            passed, total, worst = row[backend]
            mark = "" if passed == total else " !"
            cells.append(f"{f'{passed}/{total} {worst:.2f}{mark}':>{width}}")
        lines.append(f"{loss:<34}" + "".join(cells))
    return lines


def _format_failures(report: runner.Report) -> list[str]:
    failures = report.failures
    if not failures:
        return []
    lines = ["", f"failures ({len(failures)}):"]
    for o in failures[:MAX_LISTED_FAILURES]:
        mode = "" if o.fast_paths else ", fast paths off"
        lines.append(f"  {o.backend} {o.dtype}{mode}: {o.case.id}: {o.problem}")
    if len(failures) > MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more (see --json)")
    return lines


def _summary(report: runner.Report) -> list[str]:
    spreads = report.spread()
    lines = [""]
    if spreads and len(report.backends) > 1:
        case, dtype, worst = max(spreads, key=lambda s: s[2])
        lines.append(f"largest difference between two libraries: {worst:.1e} ({dtype}, {case})")
    tolerances = ", ".join(f"{d} {r:g}" for d, r in TOLERANCES.items() if d in report.dtypes)
    lines.append(f"relative tolerances (of the terms' magnitude): {tolerances}")
    n_failed = len(report.failures)
    cases = len({o.case.id for o in report.outcomes})
    lines.append(
        f"{'FAILED' if n_failed else 'PASSED'}: {len(report.outcomes) - n_failed} passed, "
        f"{n_failed} failed ({cases} cases on {', '.join(report.backends)})"
    )
    return lines


def _blame(report: runner.Report, chosen: list[namespaces.Namespace],
           args: argparse.Namespace) -> dict[str, list[blame.Suspect]]:
    trusted = {args.trust}
    return blame.blame(report, [ns for ns in chosen if ns.name not in trusted], args.trust)


def _format_blame(blamed: dict[str, list[blame.Suspect]], trusted: str) -> list[str]:
    lines = ["", f"blame (functions whose {trusted} version makes failing cases pass):"]
    for backend, found in blamed.items():
        lines.append(f"  {backend}:")
        if not found:
            lines.append("    no single function: replacing any one alone repairs no case")
        lines += [f"    {s.line()}" for s in found]
    return lines


def _flushing_notes(chosen: list[namespaces.Namespace]) -> list[str]:
    """A line for each library that declares it flushes subnormals (judged more loosely)."""
    notes = [f"{ns.name} flushes subnormals to zero (declared): values below "
             f"{FLUSHING_SLACK} smallest normal numbers are judged as zeros"
             for ns in chosen if ns.flushes_subnormals]
    return ["", *notes] if notes else []


def _chosen_namespaces(args: argparse.Namespace) -> list[namespaces.Namespace]:
    chosen = [namespaces.get(name) for name in args.backend or ()]
    chosen += [namespaces.module_namespace(module) for module in args.namespace or ()]
    return chosen or namespaces.available()


def conformance(args: argparse.Namespace, out: TextIO) -> int:
    try:
        chosen = _chosen_namespaces(args)
    except (ImportError, ValueError) as exc:
        print(f"anyloss conformance: {exc}", file=sys.stderr)
        return 2
    from . import catalogue

    cases = [c for c in catalogue.cases() if not args.loss or c.loss in args.loss]
    report = runner.run(chosen, dtypes=args.dtype or runner.DTYPES, cases=cases,
                        progress=_progress_bar(sys.stderr))
    blamed = _blame(report, chosen, args) if args.blame and not report.passed else None
    lines = _format_table(report) + _format_failures(report)
    if blamed is not None:
        lines += _format_blame(blamed, args.trust)
    for line in lines + _flushing_notes(chosen) + _summary(report):
        print(line, file=out)
    missing = {k: v for k, v in namespaces.unavailable().items() if not args.backend}
    if missing and not args.namespace:
        print("not installed: " + ", ".join(sorted(missing)), file=out)
    if args.json:
        data = report.as_dict()
        if blamed is not None:
            data["blame"] = {b: [s.as_dict() for s in found] for b, found in blamed.items()}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    return 0 if report.passed else 1


def info(args: argparse.Namespace, out: TextIO) -> int:
    import anyloss
    from anyloss import _registry

    if args.markdown:
        print(_registry.markdown_tables(), end="", file=out)
        return 0
    print(f"anyloss {anyloss.__version__}", file=out)
    print(f"fast paths: {_registry.fast_path_level()}", file=out)
    for ns in namespaces.available():
        module = sys.modules.get(ns.name) or sys.modules.get(ns.xp.__name__)
        version = getattr(module, "__version__", "?")
        print(f"  {ns.name:<18} {version:<12} default device: {_devices(ns)}", file=out)
        kernels = _registry.records(library=ns.name, stage=("first", "checked"))
        if not kernels:
            print(f"  {'':<18} kernels: none", file=out)
        for need in sorted({k.needs for k in kernels if k.needs}):
            print(f"  {'':<18} {need}: {_registry.describe(need)}", file=out)
        idle = []
        for k in kernels:
            engine = k.engine_now()
            if engine is None:
                idle.append(k)
                continue
            how = k.stage if engine == k.engine or not k.needs else f"{k.stage}, no {k.needs}"
            print(f"  {'':<18} {k.function} ({how}): {engine}; {k.accepts}", file=out)
        for need in sorted({k.needs for k in idle}):
            names = ", ".join(k.function for k in idle if k.needs == need)
            print(f"  {'':<18} off without {need}: {names}", file=out)
        blocks = [k.function for k in _registry.records(library=ns.name, stage="block")]
        if blocks:
            print(f"  {'':<18} building blocks: {', '.join(blocks)}", file=out)
    for name, reason in namespaces.unavailable().items():
        print(f"  {name:<18} not available ({reason.splitlines()[0]})", file=out)
    return 0


def _devices(ns: namespaces.Namespace) -> str:
    """The library's default device, as its array API inspection namespace names it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inspection = ns.xp.__array_namespace_info__()
            default = inspection.default_device()
            if default is None:
                default = next(d for d in inspection.devices() if d is not None)
        return str(default)
    except Exception:  # a library without the inspection API
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anyloss", description="torch.nn losses on every array library: checks and facts."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("conformance", help="run the conformance suite")
    run.add_argument("--backend", action="append", choices=namespaces.NAMES,
                     help="an installed library to test (repeatable; default: all installed)")
    run.add_argument("--namespace", action="append", metavar="MODULE",
                     help="any importable array API module to test (repeatable)")
    run.add_argument("--dtype", action="append", choices=runner.DTYPES,
                     help="a dtype to test (repeatable; default: all the library has)")
    run.add_argument("--loss", action="append", metavar="NAME",
                     help="only this loss (repeatable)")
    run.add_argument("--json", metavar="FILE", help="also write every outcome as JSON to FILE")
    run.add_argument("--blame", action="store_true",
                     help="on failure, name the array API function at fault: re-run each "
                          "failing case with one function at a time from a trusted library")
    run.add_argument("--trust", choices=("array_api_strict", "numpy"),
                     default="array_api_strict",
                     help="the library whose functions --blame borrows (default: %(default)s)")
    run.set_defaults(handler=conformance)
    show = commands.add_parser("info", help="installed libraries, devices and fast paths")
    show.add_argument("--markdown", action="store_true",
                      help="print the README's fast-path tables, generated from the registry")
    show.set_defaults(handler=info)
    build = commands.add_parser("compile", help="compile the NumPy engine's numba kernels now")
    build.add_argument("function", nargs="*",
                       help="only the kernels of these public functions (default: all)")
    build.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="compile in N processes, one kernel module each (default: 1)")
    build.set_defaults(handler=compile_kernels)
    return parser


def compile_kernels(args: argparse.Namespace, out: TextIO) -> int:
    from anyloss.backends.numpy import compiled, precompile

    unknown = [f for f in args.function if f not in precompile.CALLS]
    if unknown:
        print(f"anyloss compile: no NumPy kernels for {', '.join(unknown)}; "
              f"choose from {', '.join(precompile.CALLS)}", file=out)
        return 2
    if not compiled.HAVE_NUMBA:
        print(f"anyloss compile: nothing to compile: {compiled.WHY_NOT}", file=out)
        return 1
    print(f"compiling for {compiled.describe()}", file=out)
    seconds = precompile.compile_kernels(args.function or None, jobs=args.jobs,
                                         report=lambda line: print(f"  {line}", file=out))
    print(f"compiled in {seconds:.1f} s", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``anyloss`` console script and of ``python -m anyloss``."""
    args = _parser().parse_args(argv)
    return args.handler(args, out or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
