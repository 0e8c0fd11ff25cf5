"""``anyloss compile`` (:mod:`anyloss.backends.numpy.precompile`): what it reaches."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import anyloss
from anyloss import _registry
from anyloss.backends.numpy import compiled, precompile
from anyloss.conformance.cli import main

pytest.importorskip("numba")


def test_every_numba_kernel_of_the_registry_has_its_calls():
    needing = {k.function for k in _registry.records(library="numpy", stage=("first", "checked"))
               if k.needs == "numba"}
    assert needing, "the registry lists no NumPy kernel that needs numba"
    assert needing <= set(precompile.CALLS)
    # The linear cross entropy runs the cross-entropy kernels without needing numba itself.
    assert set(precompile.CALLS) - needing == {"linear_cross_entropy",
                                               "linear_cross_entropy_and_grad"}
    assert all(callable(getattr(anyloss, name)) for name in precompile.CALLS)
    grouped = [name for names in precompile.MODULES.values() for name in names]
    assert sorted(grouped) == sorted(precompile.CALLS)  # each function in one module's job


#: Run in a fresh interpreter, so that no kernel compiled by another test counts: the entry
#: points (the serial and parallel copies of each ``prange`` kernel, the class-loss loops)
#: whose compiled signatures lack float32 or float64 arrays after ``compile_kernels()``.
_MISSING_AFTER_COMPILE = """
import json
from anyloss.backends.numpy import compiled, precompile
from anyloss.backends.numpy.compiled.parallel import ParallelKernel
precompile.compile_kernels()
def dtypes(dispatcher):
    return {str(a.dtype) for s in dispatcher.signatures for a in s
            if str(getattr(a, "dtype", "")).startswith("float")}
entry = []
for subject in ("cross_entropy", "ctc", "elementwise", "class_losses", "half"):
    module = compiled.load(subject)
    for name, value in vars(module).items():
        if isinstance(value, ParallelKernel):
            entry += [(subject + "." + name + ".serial", value.serial),
                      (subject + "." + name + ".parallel", value.parallel)]
losses = compiled.load("class_losses")
entry += [("class_losses." + name, getattr(losses, name)) for name in ("nll", "multilabel_margin")]
# The float16 <-> float32 conversions take float32 only.
float32_only = ("halves_to_singles", "singles_to_halves")
print(json.dumps({"entry_points": len(entry),
                  "missing": [n for n, d in entry
                              if not ({"float32"} if n.split(".")[1] in float32_only
                                      else {"float32", "float64"}) <= dtypes(d)]}))
"""


def test_every_kernel_is_compiled_for_both_dtypes_serial_and_parallel():
    done = subprocess.run([sys.executable, "-c", _MISSING_AFTER_COMPILE], capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["entry_points"] > 30
    assert result["missing"] == []


def test_cli_compiles_the_named_functions():
    out = io.StringIO()
    assert main(["compile", "nll_loss", "huber_loss"], out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("compiling for numba ")
    assert sorted(line.split(":")[0].strip() for line in lines[1:3]) == ["huber_loss", "nll_loss"]
    assert lines[-1].startswith("compiled in ")


def test_jobs_run_the_modules_in_processes_and_report_every_function():
    lines = []
    seconds = precompile.compile_kernels(["nll_loss", "huber_loss", "ctc_loss"], jobs=2,
                                         report=lines.append)
    assert seconds > 0
    assert sorted(line.split(":")[0] for line in lines) == ["ctc_loss", "huber_loss",
                                                            "nll_loss"]


def test_cli_refuses_an_unknown_function():
    out = io.StringIO()
    assert main(["compile", "nll_loss", "mse_loss"], out) == 2
    assert "no NumPy kernels for mse_loss" in out.getvalue()


def test_cli_without_numba_says_why(monkeypatch):
    monkeypatch.setattr(compiled, "HAVE_NUMBA", False)
    monkeypatch.setattr(compiled, "WHY_NOT", "numba cannot be imported (test)")
    out = io.StringIO()
    assert main(["compile"], out) == 1
    assert out.getvalue() == ("anyloss compile: nothing to compile: "
                              "numba cannot be imported (test)\n")


def test_calls_leave_the_settings_as_they_were():
    before = anyloss.get_threads()
    precompile.compile_kernels(["nll_loss"])
    assert anyloss.get_threads() == before
