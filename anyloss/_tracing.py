"""What torch.compile needs to know about anyloss's own Python code.

torch.compile's front end (dynamo) traces the Python of a call into one graph. Two
kinds of anyloss code must not be traced line by line:

- the memo tables (a library's name per namespace, ``isdtype`` answers, kernels
  looked up): dynamo guards a compiled graph on the contents of every dictionary it
  reads, so one new entry, made by any later call, would recompile every compiled
  function that had read the table;
- ``warnings.warn``, which dynamo cannot trace at all (the graph would break).

:func:`constant_when_traced` marks such a function, as
:func:`torch.compiler.assume_constant_result` does (it sets the same attribute, so that
anyloss need not import torch): while torch.compile traces a call, dynamo runs the
function itself and puts its result in the graph as a constant. That is right only
for a function whose result depends on its arguments alone, and whose arguments are
Python constants, dtypes, types or modules, never arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["constant_when_traced"]

_F = TypeVar("_F", bound=Callable)


def constant_when_traced(func: _F) -> _F:
    """Mark ``func``: under torch.compile, called while tracing, its result a constant.

    ``tests/test_compile.py`` fails if torch stops honouring the mark (a graph break,
    or a recompilation for the same shapes).
    """
    func._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return func
