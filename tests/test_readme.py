"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_an_example():
    assert _python_blocks()


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    exec(compile(_python_blocks()[index], f"README.md[{index}]", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    values = {line.split()[-1] for line in lines if line.split()[0] in ("numpy", "torch", "jax")}
    assert len(values) == 1, lines  # the same number on every library
    assert "tensor([0.2500, 0.5000])" in lines[-1]
