"""PyTorch fast paths: the native ``torch.nn.functional`` kernels (and cuDNN on the GPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ctc_loss(log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity,
             max_target_length):
    """Per-sample CTC losses (N,) from ``torch.nn.functional.ctc_loss``; torch's autograd applies."""
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                      reduction="none", zero_infinity=zero_infinity)


def ctc_loss_and_grad(log_probs, targets, input_lengths, target_lengths, *, blank,
                      zero_infinity, max_target_length):
    """Per-sample losses (N,) and the gradient of their sum, by torch autograd."""
    with torch.enable_grad():
        leaf = log_probs.detach().requires_grad_(True)
        losses = ctc_loss(leaf, targets, input_lengths, target_lengths, blank=blank,
                          zero_infinity=zero_infinity, max_target_length=max_target_length)
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
    return losses.detach(), grad
