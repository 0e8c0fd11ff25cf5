"""Dask fast paths: the NumPy kernels mapped over chunks of the batch, lazily."""

from __future__ import annotations

import dask.array as da

from anyloss.backends import numpy as numpy_backend


def _batch_chunked(log_probs, targets, input_lengths, target_lengths):
    """The arrays rechunked so that each block holds whole samples (all frames, classes, labels)."""
    log_probs = log_probs.rechunk({0: -1, 2: -1})
    batch_chunks = log_probs.chunks[1]
    targets = targets.rechunk((batch_chunks, -1))
    return (log_probs, targets, input_lengths.rechunk((batch_chunks,)),
            target_lengths.rechunk((batch_chunks,)))


def _block_options(targets, target_lengths, blank, zero_infinity):
    longest = int(target_lengths.max()) if target_lengths.size else 0
    return {"blank": blank, "zero_infinity": zero_infinity,
            "max_target_length": min(longest, targets.shape[1])}


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) as a lazy Dask array, one NumPy kernel call per batch chunk.

    Concatenated (1-d) targets cannot be split by sample without knowing the
    lengths, so they decline (``NotImplemented``) to the generic formula.
    """
    if targets.ndim != 2:
        return NotImplemented

    def block(lp, tg, il, tl):
        return numpy_backend.ctc_loss(lp, tg, il, tl, **_block_options(tg, tl, blank, zero_infinity))

    arrays = _batch_chunked(log_probs, targets, input_lengths, target_lengths)
    return da.blockwise(block, "n", arrays[0], "tnc", arrays[1], "ns", arrays[2], "n",
                        arrays[3], "n", dtype=log_probs.dtype, concatenate=True)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and their gradient (T, N, C), lazily, by batch chunk."""
    if targets.ndim != 2:
        return NotImplemented

    def part(index):
        def block(lp, tg, il, tl):
            from anyloss.ctc import ctc_loss_and_grad as numpy_loss_and_grad

            # NumPy's own dispatch: the compiled kernel, or the generic alpha-beta without numba.
            result = numpy_loss_and_grad(lp, tg, il, tl, blank=blank, reduction="none",
                                         zero_infinity=zero_infinity)
            return result[index]

        return block

    arrays = _batch_chunked(log_probs, targets, input_lengths, target_lengths)
    args = (arrays[0], "tnc", arrays[1], "ns", arrays[2], "n", arrays[3], "n")
    losses = da.blockwise(part(0), "n", *args, dtype=log_probs.dtype, concatenate=True)
    grad = da.blockwise(part(1), "tnc", *args, dtype=log_probs.dtype, concatenate=True)
    return losses, grad
