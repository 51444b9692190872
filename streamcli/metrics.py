"""Word and character error rates (Levenshtein alignment), pure Python so bench and scripts share it.

WER = (substitutions + deletions + insertions) / reference words, summed over a corpus before
dividing (the usual corpus-level WER, not a mean of per-utterance rates). CER is the same over
characters of the normalised text with single spaces between words (spaces count as characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EditCounts:
    """Alignment result of one hypothesis against one reference."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Errors per reference unit; an empty reference gives 0.0 if the hypothesis is empty, else inf."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_length + other.reference_length,
        )


def edit_counts(reference: Sequence[object], hypothesis: Sequence[object]) -> EditCounts:
    """Minimum-edit alignment counts; among equal totals, prefers substitutions over del+ins pairs."""
    n_ref, n_hyp = len(reference), len(hypothesis)
    # Each cell: (total errors, substitutions, deletions, insertions); one row kept at a time.
    prev = [(j, 0, 0, j) for j in range(n_hyp + 1)]
    for i in range(1, n_ref + 1):
        cur = [(i, 0, i, 0)]
        ref_item = reference[i - 1]
        for j in range(1, n_hyp + 1):
            diag = prev[j - 1]
            match = ref_item == hypothesis[j - 1]
            best = diag if match else (diag[0] + 1, diag[1] + 1, diag[2], diag[3])
            up = prev[j]  # reference item not in hypothesis: deletion
            if up[0] + 1 < best[0]:
                best = (up[0] + 1, up[1], up[2] + 1, up[3])
            left = cur[j - 1]  # extra hypothesis item: insertion
            if left[0] + 1 < best[0]:
                best = (left[0] + 1, left[1], left[2], left[3] + 1)
            cur.append(best)
        prev = cur
    total, subs, dels, ins = prev[n_hyp]
    assert total == subs + dels + ins
    return EditCounts(subs, dels, ins, n_ref)


def normalize_transcript(text: str) -> str:
    """Lowercase, letters/digits/apostrophes only, single spaces: how references and hypotheses compare."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def word_edits(reference: str, hypothesis: str, normalize: bool = True) -> EditCounts:
    if normalize:
        reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    return edit_counts(reference.split(), hypothesis.split())


def char_edits(reference: str, hypothesis: str, normalize: bool = True) -> EditCounts:
    if normalize:
        reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    else:
        reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
    return edit_counts(reference, hypothesis)


def wer(reference: str, hypothesis: str, normalize: bool = True) -> float:
    """Word error rate of one utterance."""
    return word_edits(reference, hypothesis, normalize).error_rate


def cer(reference: str, hypothesis: str, normalize: bool = True) -> float:
    """Character error rate of one utterance."""
    return char_edits(reference, hypothesis, normalize).error_rate


@dataclass(frozen=True)
class CorpusErrorRates:
    words: EditCounts
    chars: EditCounts
    utterances: int

    @property
    def wer(self) -> float:
        return self.words.error_rate

    @property
    def cer(self) -> float:
        return self.chars.error_rate


def corpus_error_rates(pairs: Iterable[tuple[str, str]], normalize: bool = True) -> CorpusErrorRates:
    """Corpus WER/CER over (reference, hypothesis) pairs: edits summed, then divided."""
    words, chars, count = EditCounts(), EditCounts(), 0
    for reference, hypothesis in pairs:
        words = words + word_edits(reference, hypothesis, normalize)
        chars = chars + char_edits(reference, hypothesis, normalize)
        count += 1
    return CorpusErrorRates(words, chars, count)
