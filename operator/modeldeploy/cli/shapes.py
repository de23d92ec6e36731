"""What the views are made of: labelled values, table cells, and the tone of a status.

A `Tone` says what a status means, not how it looks; `render.py` picks colours and glyphs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tone(StrEnum):
    GOOD = "good"
    BUSY = "busy"
    PAUSED = "paused"
    BAD = "bad"
    QUIET = "quiet"


@dataclass(frozen=True)
class Field:
    label: str
    value: str
    tone: Tone | None = None


@dataclass(frozen=True)
class Cell:
    text: str
    tone: Tone | None = None


@dataclass(frozen=True)
class Grid:
    """A titled table; the columns in `wrap` may wrap, the others keep to one line."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    wrap: frozenset[str] = frozenset()
