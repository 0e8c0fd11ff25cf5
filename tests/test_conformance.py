"""The conformance suite itself: the runner, the ``anyloss`` command, and what it catches."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import array_api_strict
import numpy as np
import pytest

from anyloss.conformance import catalogue, cli, namespaces, runner, tolerances
from anyloss.conformance.wrapped import wrap_namespace

#: The libraries with kernels that the suite's fast-paths-off runs switch off.
_WITH_KERNELS = ("numpy", "torch", "jax", "dask")


def _failures(report: runner.Report) -> str:
    return "\n".join(
        f"{o.case.id} {o.dtype} fast={o.fast_paths}: {o.problem}" for o in report.failures[:20]
    )


@pytest.mark.parametrize("fast", [True, False], ids=["fast-paths-on", "fast-paths-off"])
def test_suite_passes_in_float16_on_each_installed_library(backend, fast):
    """Every case in float16 (where the library has it), fast paths on, and off (one test
    each, so that JAX's 70 s of the two spread over the workers)."""
    if "float16" not in runner.supported_dtypes(backend):
        pytest.skip(f"{backend.name} has no float16 in its namespace")
    report = runner.run([backend], dtypes=("float16",), fast_path_modes=(fast,))
    if not fast and not report.outcomes and backend.name not in _WITH_KERNELS:
        pytest.skip(f"{backend.name} has no kernel to switch off")  # fast-paths-on runs it
    assert report.outcomes
    assert report.passed, _failures(report)


def _is_long_ctc(case: catalogue.Case) -> bool:
    return case.loss == "ctc_loss" and case.id.startswith("ctc_loss-long-")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_suite_passes_with_fast_paths_off_on_each_installed_library(backend, dtype):
    """float64 and float32 with fast paths on are test_parity's; here they are fully off
    (one test per dtype, so that the slow libraries' runs spread over the workers).

    On Dask, CTC's long case (120 frames) is left to the test below: its generic recursion
    over the suite's chunks of 3 builds some 200,000 tasks, about 30 s a call, and it
    would run once per reduction and dtype here."""
    cases = [c for c in catalogue.cases() if not (backend.name == "dask" and _is_long_ctc(c))]
    report = runner.run([backend], dtypes=(dtype,), cases=cases, fast_path_modes=(False,))
    if backend.name in _WITH_KERNELS:
        assert report.outcomes  # these libraries have fast paths to switch off
    assert report.passed, _failures(report)


def test_dask_generic_ctc_passes_on_the_long_case():
    """The long CTC case on Dask with fast paths off, once: float64, reduction='sum'."""
    try:
        dask = namespaces.get("dask")
    except ImportError as exc:
        pytest.skip(str(exc))
    cases = [c for c in catalogue.cases()
             if _is_long_ctc(c) and c.options.get("reduction") == "sum"]
    assert len(cases) == 1
    report = runner.run([dask], dtypes=("float64",), cases=cases, fast_path_modes=(False,))
    assert len(report.outcomes) == 1
    assert report.passed, _failures(report)


def test_catalogue_covers_every_public_loss():
    import anyloss

    functions = {n for n in anyloss.__all__ if n[0].islower() and n.endswith(("loss", "kl_div", "entropy"))}
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


# --- The tolerance model --------------------------------------------------------------


def test_no_absolute_floor_hides_an_error_on_a_tiny_value():
    """-log(1 - 1e-10) as log(1 + x) gives 1.00000008e-10: 80 times float64's rtol."""
    assert not tolerances.within(np.asarray(1.00000008e-10), np.asarray(1e-10), "float64")
    assert tolerances.within(np.asarray(1.0000000001e-10), np.asarray(1e-10), "float64")


def test_a_sum_is_allowed_rtol_times_the_sum_of_its_absolute_terms():
    expected, magnitude = np.asarray(1.0), np.asarray(2e6 + 1)  # 1e6 - 1e6 + 1
    assert tolerances.within(np.asarray(1.0 + 1e-4), expected, "float64", magnitude)
    assert not tolerances.within(np.asarray(1.0 + 1e-4), expected, "float64")
    assert not tolerances.within(np.asarray(1.0 + 1e-2), expected, "float64", magnitude)


def test_special_values_must_match_position_by_position():
    nan, inf = float("nan"), float("inf")
    expected = np.asarray([nan, inf, -inf, 0.0, -0.0, 4e-321, 1.0])
    assert tolerances.within(expected.copy(), expected, "float64")
    for position, wrong in enumerate([1.0, 1e308, -1e308, -0.0, 0.0, 0.0, nan]):
        actual = expected.copy()
        actual[position] = wrong
        assert not tolerances.within(actual, expected, "float64"), position
        assert tolerances.relative_error(actual, expected, "float64") == float("inf")
    unsigned = expected.copy()
    unsigned[3:5] = [-0.0, 0.0]
    assert tolerances.within(unsigned, expected, "float64", signed_zeros=False)


def test_a_subnormal_may_differ_in_its_last_units_but_not_vanish():
    tiny = np.finfo(np.float64).smallest_subnormal
    expected = np.asarray([750 * tiny])
    assert tolerances.within(expected + tiny, expected, "float64")
    assert not tolerances.within(expected + 10 * tiny, expected, "float64")
    assert not tolerances.within(np.zeros(1), expected, "float64")


def test_a_zero_from_cancelling_terms_is_judged_by_their_magnitude():
    assert tolerances.within(np.asarray(1e-12), np.asarray(0.0), "float64", np.asarray(2e3))
    assert not tolerances.within(np.asarray(1e-12), np.asarray(0.0), "float64")


def test_references_report_the_magnitude_of_their_terms():
    x, y = np.asarray([1.0, -1.0, 3.0]), np.asarray([0.5, 0.25, 0.0])
    case = catalogue.Case("kl_div", {"input": x, "target": y}, {"reduction": "sum"})
    want = runner.expected(case, "float64")
    terms = [0.5 * (np.log(0.5) - 1.0), 0.25 * (np.log(0.25) + 1.0), 0.0]
    assert want.value == pytest.approx(sum(terms), rel=1e-12)
    # the sum of |y log y| + |y x| over the elements: each element's own terms count
    assert want.magnitude == pytest.approx(0.5 * (-np.log(0.5) + 1.0)
                                           + 0.25 * (-np.log(0.25) + 1.0), rel=1e-12)


def _unreduced_cases():
    return [c for c in catalogue.cases() if c.signed_zeros and not runner.is_reduced(c)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_references_have_torch_s_signed_zeros(dtype):
    """test_parity checks values, nan and inf against torch; this checks the sign of every zero
    the suite judges (unreduced results), on the inputs rounded as the suite rounds them."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    wrong = []
    for case in _unreduced_cases():
        arrays = case.arrays_as(np.dtype(dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = getattr(F, case.loss)(**{k: torch.from_numpy(a) for k, a in arrays.items()},
                                           **case.options).detach().numpy()
        ours = runner.expected(case, dtype).value
        zeros = theirs == 0
        if np.any(zeros & (np.signbit(theirs) != np.signbit(ours))):
            wrong.append(case.id)
    assert not wrong, wrong
