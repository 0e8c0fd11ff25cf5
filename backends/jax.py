"""JAX-specific operations used by the portable core."""

from __future__ import annotations

import jax


def stop_gradient(x: jax.Array) -> jax.Array:
    """``x`` unchanged in value, with no gradient flowing through it."""
    return jax.lax.stop_gradient(x)


def is_tracer(x: object) -> bool:
    """True when ``x`` is an abstract value being traced (``jit``, ``grad``, ``vmap``...)."""
    return isinstance(x, jax.core.Tracer)
