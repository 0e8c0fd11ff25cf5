"""NumPy kernels, by subject.

- :mod:`.cross_entropy`: cross entropy of class indices (and its gradient) in one
  blocked pass over the input;
- :mod:`.linear_cross_entropy`: the linear layer's cross entropy by row blocks of
  logits, never all of them;
- :mod:`.ctc`: CTC's forward pass and alpha-beta gradient;
- :mod:`.class_losses`: ``nll_loss`` and the margin losses over classes, one
  compiled loop per call, tried before anyloss's checks;
- :mod:`.elementwise`: the elementwise losses, one compiled pass each;
- :mod:`.blocks`: building blocks of the generic formulas;
- :mod:`.results`: the type of a 0-d result;
- :mod:`.blas`: a product added into an array by one BLAS GEMM (``beta = 1``);
- :mod:`.compiled`: every numba kernel, by subject (numba is optional).

Each public function is the target of a record of :mod:`anyloss._registry`.
"""
