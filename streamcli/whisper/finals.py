"""Whisper tiny.en as a second pass (:class:`streamcli.finals.SecondPass`): batches of closed
utterances -> final segments, word times from the first pass's log-probabilities."""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from streamcli.align import align_words
from streamcli.finals import ClosedUtterance
from streamcli.metrics import normalize_transcript
from streamcli.recent import Recent
from streamcli.results import Segment, Token, Word
from streamcli.tokens import TokenTable
from streamcli.whisper.second_pass import MAX_SEGMENT_FRAMES, SecondPassConfig, WhisperSecondPass

NAME = "whisper-tiny.en"
# Whisper stopped early when the first pass heard this many words starting this long after its last word.
EARLY_STOP_MIN_WORDS = 3
EARLY_STOP_GAP_S = 1.0


class WhisperFinals:
    """The second pass named ``whisper-tiny.en`` in a model's metadata.

    ``frames="teacher"``: Whisper's own encoder over each utterance's features (batched);
    ``"student"``: the first pass's hidden frames go to the decoder directly (no encoder run).
    ``tokens`` and ``encoder_frame_s`` are the first pass's: its characters and frame length, for the
    forced alignment that gives Whisper's words their times."""

    def __init__(
        self,
        tokens: TokenTable,
        encoder_frame_s: float,
        device: str = "auto",
        threads: int = 0,
        frames: str = "teacher",
        precision: str = "auto",
    ) -> None:
        config = SecondPassConfig(frames=frames, precision=precision)
        self.whisper = WhisperSecondPass(device, threads, config)
        self.name = f"{NAME} decoder ({frames} frames, {self.whisper.precision})"
        self.needs_hidden = frames == "student"
        self.max_frames = MAX_SEGMENT_FRAMES
        self.final_times_ms = Recent()  # per utterance, the newest
        self._char_table = {t: i for i, t in enumerate(tokens.symbols)}
        self._frame_s = encoder_frame_s

    @property
    def provider(self) -> str:
        return self.whisper.provider

    def finalize(self, utterances: Sequence[ClosedUtterance]) -> list[Segment | None]:
        t0 = time.perf_counter()
        if self.needs_hidden:
            frames = [u.hidden if u.hidden is not None else np.zeros((0, 0)) for u in utterances]
            missing = [i for i, f in enumerate(frames) if f.size == 0]
            teachers = self.whisper.encode_batch([utterances[i].features for i in missing])
            for i, teacher in zip(missing, teachers, strict=True):
                frames[i] = teacher
        else:
            frames = self.whisper.encode_batch([u.features for u in utterances])
        results = self.whisper.decode_batch(frames, [u.audio_s for u in utterances],
                                            prefixes=[self._prefix(u) for u in utterances])
        segments = [self._segment(u, r.text, r.token_ids) for u, r in zip(utterances, results, strict=True)]
        if not self.needs_hidden:
            segments = self._continue_early_stops(utterances, segments)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        self.final_times_ms.extend([elapsed_ms] * len(utterances))
        return segments

    def _continue_early_stops(self, utterances: Sequence[ClosedUtterance],
                              segments: list[Segment | None]) -> list[Segment | None]:
        """Whisper sometimes ends its text at a sentence's end although speech goes on (two utterances
        with a short pause between them in one segment): where the first pass heard words well after
        the last word Whisper wrote, the audio from there on is decoded too and its words appended."""
        tails: list[tuple[int, float, ClosedUtterance]] = []
        for i, (utterance, segment) in enumerate(zip(utterances, segments, strict=True)):
            if segment is None or not segment.words:
                continue
            # Forced alignment stretches the last word written over audio it did not write: its end is
            # where the first pass's word at its start ends.
            last = segment.words[-1]
            written_end_s = min(last.end, next(
                (w.end for w in utterance.first_pass.words if w.end > last.start + 0.2), last.end))
            missed = [w for w in utterance.first_pass.words if w.start > written_end_s + EARLY_STOP_GAP_S]
            if len(missed) < EARLY_STOP_MIN_WORDS:
                continue
            tail = utterance.after(written_end_s)
            if tail is None or tail.features.shape[0] < 50:  # nothing after it, or under 0.5 s
                continue
            tail = replace(tail, committed=(), committed_ids=(), first_pass=Segment(
                missed[0].start, missed[-1].end, " ".join(w.word for w in missed), words=missed))
            tails.append((i, written_end_s, tail))
        if not tails:
            return segments
        frames = self.whisper.encode_batch([t.features for _, _, t in tails])
        results = self.whisper.decode_batch(frames, [t.audio_s for _, _, t in tails])
        for (i, cut_s, tail), result in zip(tails, results, strict=True):
            more = self._segment(tail, result.text, result.token_ids)
            head = segments[i]
            if more is None or head is None:
                continue
            last = head.words[-1]
            words = [*head.words[:-1], Word(last.word, last.start, min(last.end, cut_s)), *more.words]
            segments[i] = Segment(start=head.start, end=words[-1].end, text=" ".join(w.word for w in words),
                                  words=words, tokens=head.tokens + more.tokens)
        return segments

    def _prefix(self, utterance: ClosedUtterance) -> tuple[int, ...]:
        """The committed words' token ids, when they spell exactly those words (else no prefix: the
        decode starts afresh and the committed words are spliced in front of what follows them)."""
        ids = utterance.committed_ids
        if not ids or not utterance.committed:
            return ()
        spelled = [normalize_transcript(w) for w in self.whisper.tokenizer.decode(list(ids)).split()]
        return ids if spelled == [normalize_transcript(w.word) for w in utterance.committed] else ()

    def _segment(self, utterance: ClosedUtterance, text: str, token_ids: list[int]) -> Segment | None:
        committed = list(utterance.committed)
        if not text:
            return _join(committed, [], []) if committed else None
        start_s = round(utterance.start_s, 6)
        log_probs = utterance.log_probs
        words = align_words(text.split(), log_probs, self._char_table, start_s,
                            start_s + log_probs.shape[0] * self._frame_s, self._frame_s)
        tokens: list[Token] = []
        word_index = -1
        token_word: list[int] = []
        for token_id in token_ids:
            piece = self.whisper.tokenizer.decode([token_id])
            if piece.startswith(" ") or word_index < 0:
                word_index = min(word_index + 1, len(words) - 1)
            tokens.append(Token(piece, words[max(0, word_index)].start, token_id))
            token_word.append(max(0, word_index))
        if committed:
            # Words already committed on screen stay as they were; the decode adds what follows them.
            skip = words_after(committed, words)
            tokens = [t for t, w in zip(tokens, token_word, strict=True) if w >= skip]
            words = words[skip:]
        return _join(committed, words, tokens)


def _join(committed: list[Word], words: list[Word], tokens: list[Token]) -> Segment | None:
    words = committed + [w for w in words if not committed or w.start >= committed[-1].end - 1e-6]
    if not words:
        return None
    return Segment(start=words[0].start, end=words[-1].end, text=" ".join(w.word for w in words),
                   words=words, tokens=tokens)


def words_after(committed: Sequence[Word], words: Sequence[Word]) -> int:
    """How many of ``words`` (a decode of audio that starts with the committed words) the committed
    words already cover: matched on normalised spelling, else by count."""
    a = [normalize_transcript(w.word) for w in committed]
    b = [normalize_transcript(w.word) for w in words]
    covered = 0
    for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
        if block.size:
            covered = block.b + block.size + (len(a) - block.a - block.size)
    return min(len(b), covered if covered else len(a))
