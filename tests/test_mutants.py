"""The suite's own test: every shipped mutant namespace fails it, and blame names the function.

Each mutant (:mod:`anyloss.conformance.mutants`) is array-api-strict with one function
broken the way real libraries have broken it. The suite runs on the mutant's
representative subset of losses, in float64 unless the fault only shows in a lower
precision; it must fail, and re-running its first failures with one function at a time
from array-api-strict must point at the broken one first.
"""

from __future__ import annotations

import io
import json

import array_api_strict
import pytest

from anyloss.conformance import blame, catalogue, cli, mutants, namespaces, runner

CASES = list(catalogue.cases())

#: The failures of each mutant that blame re-runs in the tests (the CLI re-runs more).
BLAMED = 6


def _run(mutant: mutants.Mutant, losses=None) -> tuple[namespaces.Namespace, runner.Report]:
    ns = namespaces.module_namespace(mutants.namespace_name(mutant))
    losses = losses or mutant.losses
    cases = [c for c in CASES if c.loss in losses]
    return ns, runner.run([ns], dtypes=mutant.dtypes, cases=cases)


def test_at_least_fifteen_mutants_each_breaking_one_function():
    assert len(mutants.MUTANTS) >= 15
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    functions = {m.function for m in mutants.MUTANTS}
    assert {"exp", "log", "log1p", "logaddexp", "maximum", "clip", "where", "sum", "mean",
            "max", "take", "take_along_axis", "cumulative_sum", "sqrt", "abs"} <= functions


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=lambda m: m.name)
def test_the_suite_catches_each_mutant_and_blames_its_function(mutant):
    ns, report = _run(mutant)
    assert report.outcomes
    assert report.failures, f"{mutant.name} passed the suite"
    found = blame.blame(report, [ns], max_failures=BLAMED)[ns.name]
    assert found, f"no single function repairs {mutant.name}'s failures"
    assert found[0].function == mutant.function, [s.line() for s in found]
    assert found[0].example, "blame shows no input on which the function differs"


@pytest.mark.parametrize("name", sorted(mutants.UNDETECTABLE))
def test_an_undetectable_mutant_really_passes(name):
    """Documented as undetectable, and not counted: the float64 catalogue passes on it."""
    ns = namespaces.module_namespace(f"{mutants.__name__}.{name}")
    report = runner.run([ns], dtypes=("float64",), fast_path_modes=(True,))
    assert report.outcomes and report.passed


def test_blame_names_nothing_for_a_faithful_namespace():
    ns = namespaces.module_namespace(mutants.namespace_name(mutants.MUTANTS[0]))
    report = runner.Report([], [ns.name], ["float64"])
    assert blame.blame(report, [ns]) == {}


def test_probe_shows_the_issue_s_example():
    log1p = mutants.MUTANTS[0]
    text = blame.probe(__import__(mutants.namespace_name(log1p), fromlist=["x"]),
                       array_api_strict, "log1p")
    assert text == "log1p(1e-10) = 1.00000008269e-10, expected 9.9999999995e-11"


def test_cli_blame_prints_the_function_and_writes_it_to_json(tmp_path):
    path = tmp_path / "report.json"
    out = io.StringIO()
    code = cli.main(["conformance", "--namespace", "anyloss.conformance.mutants.log_flush_to_zero",
                     "--loss", "kl_div", "--dtype", "float64", "--blame", "--json", str(path)],
                    out)
    text = out.getvalue()
    assert code == 1
    assert "blame" in text and "    log: " in text and "log(5e-324) = " in text
    data = json.loads(path.read_text())
    (suspects,) = data["blame"].values()
    assert suspects[0]["function"] == "log" and suspects[0]["cases"]
