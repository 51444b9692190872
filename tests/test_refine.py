"""Readable partials: the open utterance refined by the second pass, committed words that never
change, a speaker without pauses cut at committed words (bounded cost), refinements shed before finals,
and the views that style committed and tentative text."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest
from paths import DEV

from streamcli.audio import read_audio
from streamcli.endpoint import EndpointConfig
from streamcli.families import create_recognizer
from streamcli.finals import MAX_REFINE_BATCH, ClosedUtterance, FinalsWorker
from streamcli.metrics import corpus_error_rates, normalize_transcript
from streamcli.recognizer import RecognizerConfig, StreamDriver
from streamcli.refine import RefineConfig, agreed_prefix
from streamcli.results import Result, Segment, Word

FILES = [DEV / "librispeech/test-other/1688/1688-142285-0001.flac",
         DEV / "librispeech/test-other/1688/1688-142285-0000.flac",
         DEV / "librispeech/test-clean/1089/1089-134686-0000.flac"]


def _audio(path) -> np.ndarray:
    return read_audio(path, target_rate=16000)[0]


def _drive(rec, audio: np.ndarray, refine: RefineConfig) -> tuple[StreamDriver, list, list[Segment], float]:
    """Feeds 0.1 s blocks; after each block waits for the refinement in flight, as real time would
    give it time to finish. Returns (driver, views [(finals so far, Result)], finals, max open s)."""
    finals: list[Segment] = []
    views: list[tuple[list[str], Result]] = []
    driver = StreamDriver(rec.create_stream(), finals=rec.finals_worker(), refine=refine,
                          on_partial=lambda r: views.append(([s.text for s in finals], r)),
                          on_segment=finals.append)
    longest_open = 0.0
    for i in range(0, audio.size, 1600):
        driver.accept_waveform(16000, audio[i : i + 1600])
        in_flight = driver.refiner._in_flight
        if in_flight is not None:
            in_flight.result(30)
        driver.take_finals()
        longest_open = max(longest_open, driver.stream.open_utterance_s)
    driver.finish()
    return driver, views, finals, longest_open


@pytest.fixture(scope="module")
def rec():
    return create_recognizer(RecognizerConfig(device="cpu", threads=2))


def _words(text: str) -> list[str]:
    return text.split()


def test_committed_words_never_change_and_finals_keep_them(rec):
    audio = np.concatenate([_audio(FILES[0]), np.zeros(24000, np.float32), _audio(FILES[2])])
    driver, views, finals, _ = _drive(rec, audio, RefineConfig())
    assert driver.refiner.refinements >= 10 and len(views) >= 10
    settled: list[str] = []  # finals + committed words of the latest view
    for done, view in views:
        now = _words(" ".join([*done, view.committed]))
        assert now[: len(settled)] == settled, (settled, now)  # only ever extended
        assert view.text == " ".join(filter(None, [view.committed, view.tentative]))
        settled = now
    everything = _words(" ".join(s.text for s in finals))
    assert everything[: len(settled)] == settled  # the finals kept every committed word
    assert any(v.committed for _, v in views) and any(v.tentative for _, v in views)
    # readable: the views a viewer saw are close to the reference long before the end
    reference = ("margaret said mister hale as he returned from showing his guest downstairs i could not "
                 "help watching your face with some anxiety when mister thornton made his confession of "
                 "having been a shop boy")
    mid = " ".join(normalize_transcript(v.text) for _, v in views[len(views) // 4 : len(views) // 4 + 1])
    assert mid and corpus_error_rates([(" ".join(reference.split()[: len(mid.split())]), mid)]).wer < 0.5


def test_speech_without_pauses_is_cut_at_committed_words_and_stays_bounded():
    rec = create_recognizer(RecognizerConfig(device="cpu", threads=2, endpoint=EndpointConfig(enabled=False)))
    audio = np.concatenate([_audio(p) for p in FILES])  # ~38 s, no endpoint ever fires
    config = RefineConfig(max_open_s=6.0)
    driver, views, finals, longest_open = _drive(rec, audio, config)
    cuts = finals[:-1]  # all but the last came from cuts (no endpoints)
    assert len(cuts) >= 3
    # the record of the open utterance (what a refinement re-decodes) stays bounded
    assert longest_open <= config.max_open_s + 3.0, longest_open
    assert all(a.end <= b.start + 1e-6 for a, b in zip(finals, finals[1:], strict=False))
    hyp = " ".join(s.text for s in finals)
    ref = " ".join(["margaret said mister hale as he returned from showing his guest downstairs i could not "
                    "help watching your face with some anxiety when mister thornton made his confession of "
                    "having been a shop boy"])
    assert corpus_error_rates([(ref, " ".join(hyp.split()[: len(ref.split())]))]).wer < 0.3


def test_agreement_and_views():
    w = [Word(t, i, i + 0.5) for i, t in enumerate(["Hello,", "world", "again"])]
    assert agreed_prefix(w, [Word("hello", 0, 1), Word("World.", 1, 2)]) == 2
    assert agreed_prefix(w, [Word("Hullo", 0, 1)]) == 0
    from rich.text import Text

    from streamcli.cli.common import partial_text
    from streamcli.serve import partial_message

    text = partial_text(Result("a b c", committed="a b", tentative="c"), "italic")
    assert isinstance(text, Text) and text.plain == "a b c"
    styles = {text.plain[s.start : s.end].strip(): str(s.style) for s in text.spans}
    assert "dim" in styles["c"] and all("dim" not in str(s.style) for s in text.spans if s.end <= 3)
    assert partial_message(Result("a b c", committed="a b", tentative="c")) == {
        "partial": "a b c", "committed": "a b", "tentative": "c"}
    assert partial_message(Result("first pass")) == {"partial": "first pass"}  # Vosk as before


def test_live_renderer_dims_tentative_words():
    from rich.console import Console

    from streamcli.cli.live import LiveRenderer
    from streamcli.live import PartialEvent

    renderer = LiveRenderer(Console(width=80, force_terminal=False))
    renderer(PartialEvent("we choose to go", "we choose", "to go"))
    text = renderer._renderable()
    assert text.plain.startswith("we choose to go")
    dim = [text.plain[s.start : s.end] for s in text.spans if "dim" in str(s.style)]
    assert dim and dim[0].strip() == "to go"


def utt(text: str) -> ClosedUtterance:
    return ClosedUtterance(np.zeros((100, 80), np.float32), np.zeros((20, 4), np.float32), None, 0,
                           Segment(0, 1, text))


class _Pass:
    name = "test"
    needs_hidden = False
    max_frames = 3000

    def __init__(self) -> None:
        self.final_times_ms: list[float] = []
        self.calls: list[list[str]] = []
        self.gate = threading.Event()

    def finalize(self, utterances: Sequence[ClosedUtterance]) -> list[Segment | None]:
        self.gate.wait(5)
        self.calls.append([u.first_pass.text for u in utterances])
        time.sleep(0.01)
        return [u.first_pass for u in utterances]


def test_refinements_are_shed_before_finals():
    second = _Pass()
    worker = FinalsWorker(second, max_batch=8)

    first = worker.submit_refinement(utt("r0"))  # occupies the worker until the gate opens
    time.sleep(0.1)
    refinements = [worker.submit_refinement(utt(f"r{i}")) for i in range(1, 6)]
    final = worker.submit(utt("final"))
    second.gate.set()
    final.result(5)
    for f in [first, *refinements]:
        f.result(5)
    assert second.calls[0] == ["r0"] and second.calls[1] == ["final"]  # the final jumped the queue
    rest = second.calls[2:]  # the refinements, in order, at most MAX_REFINE_BATCH per call
    assert [r for call in rest for r in call] == ["r1", "r2", "r3", "r4", "r5"]
    assert max(len(call) for call in rest) == min(MAX_REFINE_BATCH, 5)
    assert len(worker.stats.latency_ms) == 1 and len(worker.refine_stats.latency_ms) == 6


def test_closing_the_worker_finishes_finals_and_drops_refinements():
    second = _Pass()
    worker = FinalsWorker(second, max_batch=8)

    busy = worker.submit_refinement(utt("r0"))
    time.sleep(0.1)
    final = worker.submit(utt("final"))
    dropped = worker.submit_refinement(utt("r1"))
    second.gate.set()
    worker.close()
    assert busy.result(1).text == "r0" and final.result(1).text == "final" and dropped.cancelled()
    assert not worker._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(utt("late"))


def test_unbound_finals_equal_a_files_and_settled_words_come_before_commits(rec):
    """The Realtime configuration: finals decoded afresh (as for a file), and `stable` words (agreed or
    settled) shown sooner than committed ones, always a prefix of the text."""
    from streamcli.transcription import transcribe

    audio = _audio(FILES[2])
    config = RefineConfig(bind_finals=False, max_open_s=28.0, settled_after_s=0.6)
    _, views, finals, _ = _drive(rec, audio, config)
    assert [s.text for s in finals] == [s.text for s in transcribe(audio, rec)[0]]
    for _, view in views:
        assert view.text.split()[: len(view.stable.split())] == view.stable.split()
        assert view.stable.split()[: len(view.committed.split())] == view.committed.split()
    first_stable = next(i for i, (_, v) in enumerate(views) if v.stable)
    first_committed = next((i for i, (_, v) in enumerate(views) if v.committed), len(views))
    assert first_stable < first_committed


class _Open:
    """A stream whose open utterance is ``open_utterance_s`` long (what a Refiner reads of a stream)."""

    def __init__(self) -> None:
        self.open_utterance_s = 0.0

    def snapshot_utterance(self) -> ClosedUtterance:
        frames = int(self.open_utterance_s * 100)
        return ClosedUtterance(np.zeros((frames, 80), np.float32), np.zeros((frames // 4, 4), np.float32),
                               None, 0, Segment(0, self.open_utterance_s, f"heard {self.open_utterance_s:g}"))

    def cut_utterance(self, at_s: float) -> None:
        pass


def test_a_refinement_that_heard_all_the_speech_is_the_final():
    from streamcli.refine import Refiner

    second = _Pass()
    worker = FinalsWorker(second, max_batch=8)
    refiner = Refiner(worker, RefineConfig(reuse_after_speech_s=0.3))
    stream = _Open()
    stream.open_utterance_s = 2.0
    blocking = worker.submit_refinement(utt("busy"))  # the worker waits at its gate with this one
    time.sleep(0.1)
    ahead = worker.submit_refinement(_Open().snapshot_utterance())  # another stream's, queued first
    refiner.maybe_submit(stream)  # queued behind it, audio to 2.0 s
    assert refiner.final(speech_end_s=1.8) is None  # it ends 0.2 s after the speech: too close
    reused = refiner.final(speech_end_s=1.6)
    assert reused is refiner._in_flight
    other = worker.submit_refinement(utt("other stream"))
    refiner.close()
    worker.close(timeout_s=0.1)  # the worker still waits: whatever is queued as a refinement is dropped
    second.gate.set()
    assert reused.result(5).text == "heard 2"  # promoted to a final: decoded, not dropped
    assert other.cancelled() and ahead.cancelled() and blocking.result(5).text == "busy"

    worker = FinalsWorker(second, max_batch=8)
    refiner = Refiner(worker, RefineConfig(reuse_after_speech_s=0.3))
    refiner.maybe_submit(stream)
    refiner._in_flight.result(5)
    refiner.poll()
    assert refiner.refinements == 1  # applied: the newest refinement, audio to 2.0 s
    done = refiner.final(speech_end_s=1.7)
    assert done is not None and done.done() and done.result().text == "heard 2"
    assert refiner.final(speech_end_s=1.71) is None
    assert Refiner(worker, RefineConfig(reuse_after_speech_s=None)).final(0.0) is None
    assert Refiner(worker, RefineConfig(bind_finals=False)).final(0.0) is None
    with pytest.raises(ValueError, match="reuse_after_speech_s"):
        RefineConfig(reuse_after_speech_s=-1).validate()


def test_finals_after_a_pause_come_from_the_refinements(rec, monkeypatch):
    """Two utterances with a pause between them: the first one's final is the refinement that heard
    all of its speech (no decode of its own), and it is as good as a fresh decode."""
    audio = np.concatenate([_audio(FILES[0]), np.zeros(32000, np.float32), _audio(FILES[2])])
    worker = rec.finals_worker()
    submitted: list[float] = []
    submit = worker.submit
    monkeypatch.setattr(worker, "submit", lambda u: submitted.append(u.audio_s) or submit(u))
    driver, _, finals, _ = _drive(rec, audio, RefineConfig())
    assert len(finals) == 2 and len(driver.final_latency_ms) == 2
    assert len(submitted) <= 1  # the first final was a refinement (the last may need the file's tail)
    reference = ("margaret said mister hale as he returned from showing his guest downstairs i could not "
                 "help watching your face with some anxiety when mister thornton made his confession of "
                 "having been a shop boy")
    from streamcli.transcription import transcribe

    fresh = " ".join(seg.text for seg in transcribe(_audio(FILES[0]), rec)[0])
    reused = corpus_error_rates([(reference, normalize_transcript(finals[0].text))]).wer
    assert reused <= corpus_error_rates([(reference, normalize_transcript(fresh))]).wer + 0.03


def test_a_long_utterance_is_cut_in_the_widest_pause_of_its_second_half():
    from streamcli.refine import Refiner

    class _Cuttable(_Open):
        cuts: list[float] = []

        def cut_utterance(self, at_s: float) -> None:
            self.cuts.append(at_s)

    refiner = Refiner(FinalsWorker(_Pass()), RefineConfig(max_open_s=15.0))
    stream = _Cuttable()
    stream.open_utterance_s = 16.0
    ends = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.2, 11.0, 12.0]  # pauses: 6.0-7.0 and 9.0-9.6
    starts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0, 9.6, 10.2, 11.0]
    refiner.committed = [Word(f"w{i}", s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]
    refiner._word_ids = [[i] for i in range(len(ends))]
    refiner.hypothesis = [Word("next", 12.1, 12.5)]
    refiner._audio_end_s = refiner._audio_s = 16.0
    segment = refiner.cut(stream)
    # the widest pause at or after 7.5 s (half of max_open_s) is 9.0-9.6: cut in its middle
    assert stream.cuts == [pytest.approx(9.3)]
    assert [w.word for w in segment.words] == [f"w{i}" for i in range(8)]
    assert [w.word for w in refiner.committed] == ["w8", "w9", "w10"]  # stay committed, after the cut
    assert refiner.committed_ids == (8, 9, 10)
    stream.open_utterance_s = 10.0
    assert refiner.cut(stream) is None  # short enough again


def test_a_word_on_screen_is_replaced_only_when_two_refinements_say_so():
    from streamcli.refine import steady

    def words(text: str, start: float = 0.0) -> list[Word]:
        return [Word(t, start + i, start + i + 0.8) for i, t in enumerate(text.split())]

    shown = words("supposed or suspected to")
    flip = words("supposed or spectacle to be")  # the newest refinement alone says "spectacle"
    kept = steady(shown, [], flip, previous=words("supposed or suspected"))
    assert [w.word for w in kept] == ["supposed", "or", "suspected", "to", "be"]  # the new word joins
    confirmed = steady(shown, [], flip, previous=words("supposed or spectacle"))
    assert [w.word for w in confirmed] == ["supposed", "or", "spectacle", "to", "be"]
    # committed words are never held back; words beyond what was shown come at once
    committed = words("supposed or")
    rest = steady(shown, committed, words("spectacle to be", 2.0), previous=[])
    assert [w.word for w in rest] == ["suspected", "to", "be"]
    assert steady(words("a b"), [], words("a b c d"), previous=[]) == words("a b c d")
    assert steady(words("a b c"), [], words("a x y z"), previous=[]) == words("a x y z")  # not one for one
