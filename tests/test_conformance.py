"""The conformance suite itself: the runner, the ``anyloss`` command, and what it catches."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import array_api_strict
import pytest

from anyloss.conformance import catalogue, cli, namespaces, runner
from anyloss.conformance.wrapped import wrap_namespace


def _failures(report: runner.Report) -> str:
    return "\n".join(
        f"{o.case.id} {o.dtype} fast={o.fast_paths}: {o.problem}" for o in report.failures[:20]
    )


def test_suite_passes_in_float16_on_each_installed_library(backend):
    """Every case in float16 (where the library has it), fast paths on and off."""
    if "float16" not in runner.supported_dtypes(backend):
        pytest.skip(f"{backend.name} has no float16 in its namespace")
    report = runner.run([backend], dtypes=("float16",))
    assert report.outcomes
    assert report.passed, _failures(report)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_suite_passes_with_fast_paths_off_on_each_installed_library(backend, dtype):
    """float64 and float32 with fast paths on are test_parity's; here they are fully off
    (one test per dtype, so that the slow libraries' runs spread over the workers)."""
    report = runner.run([backend], dtypes=(dtype,), fast_path_modes=(False,))
    if backend.name in ("numpy", "torch", "jax", "dask"):
        assert report.outcomes  # these libraries have fast paths to switch off
    assert report.passed, _failures(report)


def test_catalogue_covers_every_public_loss():
    import anyloss

    functions = {n for n in anyloss.__all__ if n[0].islower() and n.endswith(("loss", "kl_div"))}
    functions -= {"ctc_loss_and_grad"}
    covered = {case.loss for case in catalogue.cases()}
    assert functions <= covered, functions - covered
    assert covered <= set(catalogue.references())


def test_a_faithful_wrapped_namespace_passes():
    """The wrapper alone changes nothing: a user's library built on it would start green."""
    wrap_namespace(array_api_strict, "faithful_strict_for_tests")
    report = runner.run([namespaces.module_namespace("faithful_strict_for_tests")],
                        dtypes=("float64",))
    assert report.outcomes and report.passed


def test_a_broken_namespace_is_caught_with_a_clear_report():
    """array-api-strict whose logaddexp silently computes in float32."""
    ns = namespaces.module_namespace("anyloss.conformance.broken")
    cases = [c for c in catalogue.cases() if c.loss in ("soft_margin_loss", "mse_loss")]
    report = runner.run([ns], cases=cases)
    failed = {(o.case.loss, o.dtype) for o in report.failures}
    assert ("soft_margin_loss", "float64") in failed
    assert all(loss == "soft_margin_loss" and dtype == "float64" for loss, dtype in failed)
    assert all("expected" in o.problem for o in report.failures)

    out = io.StringIO()
    code = cli.main(["conformance", "--namespace", "anyloss.conformance.broken",
                     "--loss", "soft_margin_loss", "--loss", "mse_loss", "--dtype", "float64"], out)
    text = out.getvalue()
    assert code == 1
    assert "FAILED" in text and "soft_margin_loss-reduction=mean" in text
    assert "mse_loss" in text  # listed, and passing


def test_cli_json_output(tmp_path):
    path = tmp_path / "report.json"
    code = cli.main(["conformance", "--backend", "numpy", "--loss", "huber_loss",
                     "--json", str(path)], io.StringIO())
    data = json.loads(path.read_text())
    assert code == 0
    assert data["backends"] == ["numpy"]
    assert data["summary"]["failed"] == 0 and data["summary"]["passed"] == len(data["results"])
    assert {r["loss"] for r in data["results"]} == {"huber_loss"}
    assert set(data["tolerances"]) >= {"float64", "float32"}


def test_cli_prints_no_progress_bar_when_piped():
    proc = subprocess.run(
        [sys.executable, "-m", "anyloss", "conformance", "--backend", "numpy", "--loss", "l1_loss"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.rstrip().splitlines()[-1].startswith("PASSED")


def test_cli_unknown_namespace_is_an_error():
    err = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, err
    try:
        code = cli.main(["conformance", "--namespace", "no_such_module_here"], io.StringIO())
    except ModuleNotFoundError:
        code = "raised"
    finally:
        sys.stderr = sys_stderr
    assert code == 2 and "no_such_module_here" in err.getvalue()


def test_info_lists_libraries_and_fast_paths():
    out = io.StringIO()
    assert cli.main(["info"], out) == 0
    text = out.getvalue()
    assert "numpy" in text and "fast paths" in text
