"""The README's example (its first Python block) runs as written and prints what it says.

The language-model example runs too (below). The Dask cluster example needs
``distributed`` and starts a cluster; it is ``benchmarks/dask_cluster_example.py``,
run by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    return blocks[0]


def test_readme_example_runs(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    exec(compile(_example(), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    values = {line.split()[-1] for line in lines if line.split()[0] in ("numpy", "torch", "jax")}
    assert len(values) == 1, lines  # the same number on every library
    assert "tensor([0.2500, 0.5000])" in lines[-1]


def test_readme_fast_path_tables_are_the_registry():
    """The README's fast-path tables are exactly what the registry generates."""
    from anyloss import _registry

    text = README.read_text()
    begin = text.index("<!-- fast-path tables: generated")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- end of fast-path tables -->")
    assert text[begin:end].strip() == _registry.markdown_tables().strip(), (
        "README.md's fast-path tables differ from the registry: paste `anyloss info --markdown`")


def test_readme_language_model_example_trains():
    """The linear_cross_entropy example runs as written and prints the loss it says."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "linear_cross_entropy_and_grad" in b]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert out.getvalue().split() == ["0.34"]
