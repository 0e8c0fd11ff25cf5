"""Placeholder: cases and references of the embedding family (issue 3)."""
