"""Placeholder: filled in by the embedding work of issue 3."""

__all__: list[str] = []
