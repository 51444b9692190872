"""Small result types. All times are seconds from the start of the stream."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Token:
    """One decoded token (a BPE piece or a character) and the time it was emitted at."""

    text: str
    start: float
    id: int


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    """A finalized stretch of text (closed by an endpoint or by the end of the input)."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """The current hypothesis of a stream since its last reset (partial text).

    With refinements (streamcli.refine) ``text`` = ``committed`` + " " + ``tentative``: the committed
    words never change until they become final; the tentative ones may. Without, both are empty and
    ``text`` is the first pass's hypothesis."""

    text: str
    tokens: list[Token] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    committed: str = ""
    tentative: str = ""
    # Refining: committed + the tentative words the last two refinements agreed on (never revised in
    # almost every case, but not binding on the final; see streamcli.refine.View.agreed).
    stable: str = ""
