"""Readable text while someone speaks: the open utterance re-decoded by the second pass as it grows.

Every ``every_s`` of new audio the driver hands a snapshot of the open utterance to the batched
second-pass worker as a *refinement* (served only when no final waits; one in flight per stream, so
under load refinements come less often and finals never wait). Words two consecutive refinements
agree on (LocalAgreement, as whisper_streaming does) are **committed**: they never change on screen
and the final keeps them as they are; the rest of the newest refinement is **tentative**. Each decode
(refinement or final) starts from the committed words' tokens as a forced prefix, so it only writes
what follows them, and at an endpoint a refinement that already heard all of the speech *is* the
final (no decode of its own). An open utterance longer than ``max_open_s`` is cut in a pause between
committed words: the words before it become a segment of their own and the record starts there, so a
refinement costs the same however long the speaker goes on without a long pause.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from streamcli.finals import completed
from streamcli.metrics import normalize_transcript
from streamcli.results import Segment, Token, Word

if TYPE_CHECKING:
    from streamcli.finals import ClosedUtterance, FinalsWorker


class Stream(Protocol):
    """What a refiner needs of a stream (streamcli.recognizer.Stream has it)."""

    @property
    def open_utterance_s(self) -> float: ...
    def snapshot_utterance(self) -> ClosedUtterance | None: ...
    def cut_utterance(self, at_s: float) -> None: ...


@dataclass(frozen=True)
class RefineConfig:
    """When to refine the open utterance and when to cut it (seconds of audio)."""

    every_s: float = 0.5  # a refinement once this much new audio arrived since the last one
    # Beyond this, cut the open utterance after its last committed word. Measured on 240 s of dev speech
    # (finals WER, refinements at real-time cadence): no refinements 13.8 %, cut at 8 s 16.5 %, at 15 s
    # or never 14.4 %: a cut costs Whisper its context, so only long stretches without a pause are cut.
    max_open_s: float = 15.0
    # A refinement's words ending this close to the end of its audio are not shown yet: the speaker
    # is usually still inside them ("show" before "showing"). 90 s of dev speech, 1 stream (settle p50,
    # revisions): 0.3 s 0.66 s, 9.3 %; 0.2 s 0.58 s, 10.7 %; 0.2 s with words on screen kept until a
    # second refinement confirms their replacement (steady()) 0.56 s, 8.3 %.
    hold_back_s: float = 0.2
    # Words are committed only once this much audio follows them: Whisper revises a word when it hears
    # what comes next ("What is" -> "What a"), and a committed word is kept by the final.
    # Finals WER on dev.tsv with refinements (commit_after_s / commit_from_s): 0 / 0 9.20 %, 1 / 3
    # 8.08 %, 2 / 4 7.61 %, 3 / 6 7.69 % (without refinements 7.24 %).
    commit_after_s: float = 2.0
    # Nor before the open utterance holds this much audio: a decode of its first second or two is the
    # least reliable ("are traded" for "I've tried it", agreed on twice), and the final keeps it.
    commit_from_s: float = 4.0
    # Whether the final of an utterance keeps its committed words (the words on screen never change).
    # Off, the final is decoded afresh, as for a file (OpenAI Realtime: its completed text is
    # authoritative and equals `streamcli transcribe`'s; deltas are not binding there anyway).
    bind_finals: bool = True
    # View.agreed also takes the newest refinement's leading words that end at least this long before
    # its audio ends (the speaker has moved on), without waiting for a second refinement (None: off).
    settled_after_s: float | None = None
    # At an endpoint, a refinement whose audio reaches this far past the end of the speech (done or in
    # flight) is the final: it heard every word, so the final needs no decode of its own (None: off).
    reuse_after_speech_s: float | None = 0.3

    def validate(self) -> RefineConfig:
        if not 0.1 <= self.every_s <= 30:
            raise ValueError(f"refine every_s must be 0.1..30 s, got {self.every_s}")
        if not 0 <= self.commit_from_s <= 28:
            raise ValueError(f"refine commit_from_s must be 0..28 s, got {self.commit_from_s}")
        if not 0 <= self.commit_after_s <= 10:
            raise ValueError(f"refine commit_after_s must be 0..10 s, got {self.commit_after_s}")
        if not 0 <= self.hold_back_s <= 5:
            raise ValueError(f"refine hold_back_s must be 0..5 s, got {self.hold_back_s}")
        if self.reuse_after_speech_s is not None and not 0 <= self.reuse_after_speech_s <= 5:
            raise ValueError(f"refine reuse_after_speech_s must be 0..5 s, got {self.reuse_after_speech_s}")
        if not 2 <= self.max_open_s <= 28:
            raise ValueError(f"refine max_open_s must be 2..28 s, got {self.max_open_s}")
        return self


@dataclass(frozen=True)
class View:
    """What a viewer sees of the text not final yet: committed words (never change), then tentative."""

    committed: tuple[Word, ...] = ()
    tentative: tuple[Word, ...] = ()
    # The leading tentative words the last two refinements agreed on but the commit rules still hold
    # back (not binding on the final; the OpenAI Realtime deltas use them: sooner, rarely revised).
    agreed: tuple[Word, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(w.word for w in (*self.committed, *self.tentative))


def agreed_prefix(a: Sequence[Word], b: Sequence[Word]) -> int:
    """How many leading words ``a`` and ``b`` share (compared as normalised spellings)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if normalize_transcript(x.word) != normalize_transcript(y.word) or not normalize_transcript(x.word):
            break
        n += 1
    return n


def word_token_ids(tokens: Sequence[Token], words: int) -> list[list[int]]:
    """Ids of the leading tokens that spell each of the first ``words`` words (a piece that starts with
    a space starts a word, as the decoded text is split)."""
    ids: list[list[int]] = []
    for token in tokens:
        if token.text[:1].isspace() or not ids:
            if len(ids) == words:
                break
            ids.append([])
        ids[-1].append(token.id)
    return ids


def steady(shown: Sequence[Word], committed: Sequence[Word], candidate: Sequence[Word],
           previous: Sequence[Word]) -> list[Word]:
    """The tentative words to show after ``committed``: ``candidate`` (the newest refinement's), except
    that words on screen it alone replaces one for one stay as they are until a second refinement says
    the same (``previous`` had the new word at about that time): Whisper flips a hard word back and
    forth ("suspected", "spectacle", "suspected"), and each flip is a revision the viewer sees."""
    new = [*committed, *candidate]
    old_keys = [normalize_transcript(w.word) for w in shown]
    new_keys = [normalize_transcript(w.word) for w in new]

    def heard_before(word: Word) -> bool:
        key = normalize_transcript(word.word)
        return any(normalize_transcript(p.word) == key and p.start < word.end and word.start < p.end
                   for p in previous)

    words: list[Word] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old_keys, b=new_keys, autojunk=False).get_opcodes():
        one_for_one = tag == "replace" and i2 - i1 == j2 - j1 and j1 >= len(committed)
        if one_for_one and not all(heard_before(w) for w in new[j1:j2]):
            words += shown[i1:i2]
        else:
            words += new[j1:j2]
    return words[len(committed) :]


class Refiner:
    """Refinement state of one stream's open utterance (owned by its StreamDriver)."""

    def __init__(self, worker: FinalsWorker, config: RefineConfig) -> None:
        self.worker = worker
        self.config = config.validate()
        self.refinements = 0  # results applied
        self.reset()

    def reset(self) -> None:
        """A new utterance: nothing committed or tentative; a refinement in flight is dropped."""
        self.committed: list[Word] = []
        self._word_ids: list[list[int]] = []  # per committed word, the second pass's tokens spelling it
        self.hypothesis: list[Word] = []  # the newest refinement after the committed words
        self.tentative: list[Word] = []  # what of it is shown (the words held back left out)
        self.agreed: list[Word] = []  # its leading words the last two refinements agreed on (View.agreed)
        self._in_flight: Future | None = None
        self._submitted_s = 0.0  # open audio (s) at the last submission
        self._audio_end_s = 0.0  # stream time where the audio of the refinement in flight ends
        self._audio_s = 0.0  # and how much audio it holds
        self._latest: Segment | None = None  # the newest refinement applied (committed words first)
        self._latest_end_s = 0.0  # stream time where its audio ends

    @property
    def committed_ids(self) -> tuple[int, ...]:
        """The second pass's tokens that spell the committed words (its decode prefix)."""
        return tuple(i for ids in self._word_ids for i in ids)

    @property
    def view(self) -> View:
        return View(tuple(self.committed), tuple(self.tentative), tuple(self.agreed))

    def maybe_submit(self, stream: Stream) -> None:
        """Hands a snapshot of the open utterance to the worker when enough new audio arrived."""
        if self._in_flight is not None:
            return
        open_s = stream.open_utterance_s
        if open_s - self._submitted_s < self.config.every_s:
            if open_s < self._submitted_s:  # the record was cut: count from there
                self._submitted_s = open_s
            return
        utterance = stream.snapshot_utterance()
        if utterance is None:  # nothing heard yet
            return
        self._submitted_s = open_s
        self._audio_end_s = utterance.start_s + utterance.audio_s
        self._audio_s = utterance.audio_s
        self._in_flight = self.worker.submit_refinement(
            replace(utterance, committed=tuple(self.committed), committed_ids=self.committed_ids))

    def poll(self) -> bool:
        """Applies a finished refinement; True when the view changed."""
        future = self._in_flight
        if future is None or not future.done():
            return False
        self._in_flight = None
        if future.cancelled():  # the worker was closed before it started
            return False
        segment: Segment | None = future.result()
        self._latest, self._latest_end_s = segment, self._audio_end_s
        words = list(segment.words) if segment is not None else []
        if words[: len(self.committed)] != self.committed:  # the decode came back without them
            words = self.committed + words
        new = words[len(self.committed) :]
        agreed = agreed_all = agreed_prefix(self.hypothesis, new)
        while agreed and new[agreed - 1].end > self._audio_end_s - self.config.commit_after_s:
            agreed -= 1
        if self._audio_s < self.config.commit_from_s:
            agreed = 0
        before, previous = self.view, self.hypothesis
        if agreed:
            self._word_ids += word_token_ids(segment.tokens if segment is not None else [], agreed)
        self.committed += new[:agreed]
        self.hypothesis = new[agreed:]
        limit = self._audio_end_s - self.config.hold_back_s
        candidate = [w for w in self.hypothesis if w.end <= limit]
        self.tentative = steady([*before.committed, *before.tentative], self.committed, candidate, previous)
        # Agreed words: the newest refinement's, as shown (not a word steady() kept on screen).
        as_shown = 0
        while as_shown < min(len(self.tentative), len(self.hypothesis)) and \
                self.tentative[as_shown] == self.hypothesis[as_shown]:
            as_shown += 1
        n_agreed = max(0, min(agreed_all - agreed, as_shown))
        if self.config.settled_after_s is not None:
            settled = self._audio_end_s - self.config.settled_after_s
            while n_agreed < as_shown and self.tentative[n_agreed].end <= settled:
                n_agreed += 1
        self.agreed = self.tentative[:n_agreed]
        self.refinements += 1
        return self.view != before

    def final(self, speech_end_s: float) -> Future | None:
        """The closing utterance's final from a refinement, when one heard all of its speech (audio to
        ``reuse_after_speech_s`` past ``speech_end_s``): the newest applied one at once, else the one in
        flight when it is done. None: the final needs a decode of its own. Call before :meth:`close`."""
        margin_s = self.config.reuse_after_speech_s
        if margin_s is None or not self.config.bind_finals:
            return None
        if self._latest is not None and self._latest_end_s >= speech_end_s + margin_s:
            return completed(self._latest)
        in_flight = self._in_flight
        if in_flight is not None and self._audio_end_s >= speech_end_s + margin_s:
            self.worker.promote(in_flight)  # a final now: served before refinements, never dropped
            return in_flight  # its result starts with the committed words, as a final does
        return None

    def cut(self, stream: Stream) -> Segment | None:
        """Past ``max_open_s``: committed words become a segment and the record starts after them.

        The cut goes into the widest pause between two words of the record's second half (the last
        committed word and the next one heard included), in the middle of it: word times are estimates,
        and a cut inside a word makes the next decode repeat or drop it."""
        if not self.committed or stream.open_utterance_s < self.config.max_open_s:
            return None
        record_start_s = self._audio_end_s - self._audio_s
        following = [*self.committed[1:], *self.hypothesis[:1]]
        best, best_gap = len(self.committed) - 1, -1.0
        for i, (word, after) in enumerate(zip(self.committed, following, strict=False)):
            gap = after.start - word.end
            if word.end >= record_start_s + self.config.max_open_s / 2 and gap >= best_gap:
                best, best_gap = i, gap
        words = self.committed[: best + 1]
        cut_s = words[-1].end + max(0.0, best_gap) / 2
        stream.cut_utterance(cut_s)
        self.committed = self.committed[best + 1 :]
        self._word_ids = self._word_ids[best + 1 :] if len(self._word_ids) > best + 1 else []
        if len(self._word_ids) != len(self.committed):  # ids unknown for some: no prefix from here
            self._word_ids = []
        self._submitted_s = 0.0
        self._in_flight = None  # it decoded the audio before the cut: its words are in the segment
        self._latest = None
        return Segment(start=words[0].start, end=words[-1].end, text=" ".join(w.word for w in words),
                       words=list(words))

    def close(self) -> tuple[tuple[Word, ...], tuple[int, ...]]:
        """The utterance closed: its committed words (the final keeps them) and their token ids, then a
        fresh start."""
        committed = tuple(self.committed), self.committed_ids
        self.reset()
        return committed
