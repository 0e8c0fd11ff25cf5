"""Per-library code, installed as :mod:`anyloss.backends`.

Each module here belongs to one array library and may import it; none of them
is imported by ``import anyloss``. The portable core reaches a module only after
it has seen an array of that library, so the library is already loaded.

- :mod:`anyloss.backends.jax`: the operations JAX needs beyond the standard
  (stopping gradients, recognising traced values).
"""
