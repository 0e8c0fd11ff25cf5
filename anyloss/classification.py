"""Placeholder: filled in by the classification work of issue 3."""

__all__: list[str] = []
