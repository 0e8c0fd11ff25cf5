"""A deliberately broken array namespace: array-api-strict with a subtly wrong ``logaddexp``.

Its ``logaddexp`` computes in float32 whatever the input dtype, the kind of
shortcut a library might take for speed: float32 results are right, float64
ones lose half their digits. Nothing crashes and every value looks plausible;
``anyloss conformance --namespace anyloss.conformance.broken`` still finds it,
naming each loss and case that goes through ``logaddexp``.
"""

from __future__ import annotations

import array_api_strict as _strict

from .wrapped import wrap_namespace


def _logaddexp_in_float32(x1, x2):
    dtype = _strict.result_type(x1, x2)
    low = [_strict.astype(x, _strict.float32) if hasattr(x, "dtype") else x for x in (x1, x2)]
    return _strict.astype(_strict.logaddexp(*low), dtype)


wrap_namespace(_strict, __name__, {"logaddexp": _logaddexp_in_float32})
