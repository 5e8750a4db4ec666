"""Data layer: value types, the benchmark file format, corpus statistics and downloads."""

from smner.data.conll import Corpus, parse_conll, read_conll, write_conll, write_predictions
from smner.data.types import Entity, Example

__all__ = [
    "Corpus",
    "Entity",
    "Example",
    "parse_conll",
    "read_conll",
    "write_conll",
    "write_predictions",
]
