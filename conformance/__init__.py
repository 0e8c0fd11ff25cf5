"""The anyloss conformance suite, installed as :mod:`anyloss.conformance`.

- :mod:`anyloss.conformance.reference`: float64 reference implementations of
  each loss, plain NumPy loops written independently of anyloss's formulas.
- :mod:`anyloss.conformance.cases`: the seeded case catalogue that the tests
  (and, later, the ``anyloss conformance`` runner) feed to every backend.
"""
