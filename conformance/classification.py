"""Placeholder: cases and references of the classification family (issue 3)."""
