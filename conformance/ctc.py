"""Placeholder: cases and references of ctc_loss (issue 4)."""
