"""Fixtures shared by the tests: one ``backend`` per array library."""

from __future__ import annotations

import pytest

from anyloss.conformance import namespaces


@pytest.fixture(params=namespaces.NAMES)
def backend(request) -> namespaces.Namespace:
    """Each installed array library in turn; a missing one is skipped with its reason."""
    try:
        return namespaces.get(request.param)
    except ImportError as exc:
        pytest.skip(str(exc))
