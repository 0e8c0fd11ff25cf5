"""The anyloss conformance suite, installed as :mod:`anyloss.conformance`.

- :mod:`~anyloss.conformance.catalogue`: the seeded case catalogue, assembled from
  one module per family (``regression``, ``classification``, ``margin``,
  ``embedding``, ``probabilistic``, ``ctc``), each holding its cases and its
  float64 reference implementations: plain loops, independent of anyloss's formulas.
- :mod:`~anyloss.conformance.namespaces`: the array libraries the suite drives.
- :mod:`~anyloss.conformance.tolerances`: the per-dtype tolerances, stated once.
- :mod:`~anyloss.conformance.runner`: the catalogue on any namespace, against the
  references, with fast paths on and off.
- :mod:`~anyloss.conformance.cli`: the ``anyloss conformance`` and ``anyloss info``
  commands.
- :mod:`~anyloss.conformance.extremes`: the cases at the edges of floating point
  (accuracy of elementary functions, nan, inf, signed zeros, subnormals, 10^6-term sums).
- :mod:`~anyloss.conformance.wrapped` and :mod:`~anyloss.conformance.broken`: a
  tool that wraps a namespace with some functions replaced, and a deliberately
  broken namespace built with it, which the suite catches.
- :mod:`~anyloss.conformance.mutants`: array-api-strict with one function broken at a
  time, the way real libraries have broken it: the suite's measure of its own power.
- :mod:`~anyloss.conformance.blame`: which function of a failing namespace is at fault.
"""
