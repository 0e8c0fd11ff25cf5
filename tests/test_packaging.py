"""Both install modes expose the three folders as one package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = (
    "import anyloss, anyloss.backends, anyloss.conformance, anyloss.backends.jax;"
    "print(anyloss.__file__); print(anyloss.backends.__file__);"
    "print(anyloss.conformance.__file__)"
)


def test_normal_install_has_backends_and_conformance(tmp_path):
    """A non-editable install (wheel contents in a fresh folder) imports every subpackage."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True,
                         text=True, cwd=tmp_path, env=env).stdout.split()
    assert all(path.startswith(str(target)) for path in out), out


def test_current_install_has_backends_and_conformance(tmp_path):
    """The install the tests run against (editable in development and CI)."""
    out = subprocess.run([sys.executable, "-c", CHECK], check=True, capture_output=True,
                         text=True, cwd=tmp_path).stdout.split()
    assert out[1].endswith(os.path.join("backends", "__init__.py"))
    assert out[2].endswith(os.path.join("conformance", "__init__.py"))
