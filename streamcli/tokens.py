"""Token table (tokens.txt) and BPE pieces -> text and words with times.

tokens.txt holds one ``symbol id`` pair per line (sherpa-onnx/icefall layout). BPE pieces mark the
start of a word with ``▁`` (U+2581); pieces without it continue the previous word.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamcli.errors import ModelError
from streamcli.results import Token, Word

WORD_START = "\u2581"
MAX_TOKENS = 1_000_000
SPECIAL_SYMBOLS = frozenset({"<blk>", "<blank>", "<sos/eos>", "<unk>", "<eps>", "<s>", "</s>", "<pad>"})


class TokenTable:
    """id <-> symbol map read from tokens.txt."""

    def __init__(self, symbols: Sequence[str]) -> None:
        if not symbols:
            raise ModelError("tokens.txt is empty")
        self.symbols: list[str] = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        self.blank_id = self._ids.get("<blk>", self._ids.get("<blank>", 0))
        self.unk_id: int | None = self._ids.get("<unk>")

    @classmethod
    def from_file(cls, path: str | Path) -> TokenTable:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ModelError(f"{path}: cannot read token table ({e})") from None
        pairs: dict[int, str] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 1 and parts[0].lstrip("-").isdigit():
                parts = [" ", parts[0]]  # a space symbol written as " id"
            if len(parts) != 2 or not parts[1].isdigit():
                raise ModelError(f"{path}:{lineno}: expected 'symbol id', got {line!r}")
            token_id = int(parts[1])
            if token_id >= MAX_TOKENS:
                raise ModelError(
                    f"{path}:{lineno}: token id {token_id} is beyond the limit of {MAX_TOKENS} tokens"
                )
            if token_id in pairs:
                raise ModelError(f"{path}:{lineno}: token id {token_id} appears twice "
                                 f"({pairs[token_id]!r} and {parts[0]!r})")
            pairs[token_id] = parts[0]
        if not pairs:
            raise ModelError(f"{path}: no tokens")
        size = max(pairs) + 1
        if sorted(pairs) != list(range(size)):
            raise ModelError(f"{path}: token ids are not 0..{size - 1} without gaps")
        return cls([pairs[i] for i in range(size)])

    def __len__(self) -> int:
        return len(self.symbols)

    def __getitem__(self, token_id: int) -> str:
        return self.symbols[token_id]

    def id_of(self, symbol: str) -> int | None:
        return self._ids.get(symbol)

    def text(self, ids: Sequence[int]) -> str:
        return pieces_to_text([self.symbols[i] for i in ids])


def pieces_to_text(pieces: Sequence[str]) -> str:
    """Joins BPE pieces: ``▁`` becomes a space; special symbols are dropped."""
    text = "".join(p for p in pieces if p not in SPECIAL_SYMBOLS)
    return " ".join(text.replace(WORD_START, " ").split())


def tokens_to_words(
    tokens: Sequence[Token], *, max_token_s: float = 0.32, end_s: float | None = None
) -> list[Word]:
    """Groups BPE tokens into words.

    A word starts at its first piece's time. It ends where the next word's first piece starts, but no
    later than ``max_token_s`` after its own last piece (a pause after a word is not part of it); the
    last word ends ``max_token_s`` after its last piece, capped at ``end_s`` when given.
    """
    groups: list[list[Token]] = []
    for tok in tokens:
        if tok.text in SPECIAL_SYMBOLS or not tok.text:
            continue
        starts_word = tok.text.startswith(WORD_START) or tok.text.startswith(" ")
        if starts_word or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    words: list[Word] = []
    for i, group in enumerate(groups):
        text = "".join(t.text for t in group).replace(WORD_START, " ").strip()
        if not text:
            continue
        start = group[0].start
        end = group[-1].start + max_token_s
        if i + 1 < len(groups):
            end = min(end, groups[i + 1][0].start)
        elif end_s is not None:
            end = min(end, max(end_s, group[-1].start))
        end = max(end, group[-1].start)
        words.append(Word(word=text, start=round(start, 3), end=round(end, 3)))
    return words
