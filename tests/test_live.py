"""Unit tests of the live pipeline with injected input streams (no sound card, no model)."""

from __future__ import annotations

import functools
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from live_fakes import FakeInputStream, FakeRecognizer, bursts

from streamcli import live as lv
from streamcli.capture import FileInputStream, InputDevice, resolve_input_device
from streamcli.cli.live import LiveRenderer, status_line
from streamcli.endpoint import EndpointConfig
from streamcli.errors import DeviceError
from streamcli.formats import LIVE_FORMATS, SegmentWriter, pick_format, timestamp
from streamcli.live import (
    LiveTranscriber,
    PartialEvent,
    SegmentEvent,
    StatusEvent,
    stop_on_sigint,
)
from streamcli.results import Segment, Token, Word

# speech 1.0 s, silence 2.0 s, speech 0.6 s, silence 2.0 s
PATTERN = [(0.5, 0.0), (1.0, 0.3), (2.0, 0.0), (0.6, 0.3), (2.0, 0.0)]


def run_session(samples, rate, block_sizes, *, endpoint=None, recognizer=None, **kwargs):
    rec = recognizer or FakeRecognizer(endpoint or EndpointConfig(rule2_min_trailing_silence_s=1.0))
    fake_kwargs = {
        k: kwargs.pop(k)
        for k in list(kwargs)
        if k in ("overflow_blocks", "vanish_after", "stall_after", "block_delay_s")
    }
    made = []

    def factory(**kw):
        assert "samplerate" not in kw and "channels" not in kw  # nothing asked: the device decides
        stream = FakeInputStream(samples, rate, block_sizes, **fake_kwargs, **kw)
        made.append(stream)
        return stream

    session = LiveTranscriber(rec, stream_factory=factory, **kwargs)
    events = []
    error = None
    try:
        for event in session.events(timeout_s=60):
            events.append(event)
    except DeviceError as exc:
        error = exc
    segments = [e.segment for e in events if isinstance(e, SegmentEvent)]
    return session, segments, events, rec, made[0], error


def texts(segments):
    return [s.text for s in segments]


def test_block_sizes_do_not_change_the_transcript():
    rate = 16000
    samples = bursts(rate, PATTERN)
    _, reference, _, rec, _, _ = run_session(samples, rate, [samples.shape[0]])
    assert len(reference) == 2, texts(reference)
    # Every 0.1 s chunk of the two bursts gives a token: 10 + 6.
    assert [len(s.tokens) for s in reference] == [10, 6]
    for sizes in ([160], [1, 7, 4097, 3], [1023], [2, 5000]):
        session, segments, _, rec, fake, _ = run_session(samples, rate, sizes)
        assert texts(segments) == texts(reference), sizes
        assert [(s.start, s.end) for s in segments] == [(s.start, s.end) for s in reference]
        # Nothing was lost or duplicated between the callback and the recognizer.
        assert sum(rec.streams[0].accepted_block_sizes) == samples.shape[0]
        assert session.summary.blocks == len(fake.delivered_sizes)
        assert session.summary.audio_s == pytest.approx(samples.shape[0] / rate)
        assert session.summary.overflowed_blocks == 0 and session.summary.dropped_blocks == 0
        assert session.summary.stop_reason == "end-of-input"


def test_native_rate_and_channels_are_downmixed_and_resampled():
    rate = 44100
    stereo = bursts(rate, PATTERN, channels=2)
    stereo[:, 1] = 0.0  # one silent channel: the downmix must average, not pick a channel
    session, segments, _, rec, _, _ = run_session(stereo, rate, [441, 17, 1000])
    assert session.capture_rate_hz == 44100 and session.capture_channels == 2
    fed = np.concatenate([np.zeros(0, np.float32), rec.streams[0].samples])
    # soxr output length: within a few samples of the exact ratio (plus the zero padding to a chunk).
    assert abs(rec.streams[0].samples.size - stereo.shape[0] * 16000 / 44100) <= 1600
    # Half amplitude (mean of 0.3 and 0): the tone must be there, at about 0.15 peak.
    assert 0.13 < float(np.abs(fed).max()) < 0.17
    assert [len(s.tokens) for s in segments] == [10, 6]


def test_overflow_flags_are_counted_and_reported():
    rate = 16000
    samples = bursts(rate, PATTERN)
    session, _, events, _, _, _ = run_session(samples, rate, [320], overflow_blocks={3, 7, 11})
    assert session.summary.overflowed_blocks == 3
    statuses = [e.status for e in events if isinstance(e, StatusEvent)]
    assert statuses and statuses[-1].overflowed_blocks == 3
    assert statuses[-1].provider == "FakeExecutionProvider"


def test_blocks_dropped_when_the_worker_falls_behind_are_counted_not_hidden():
    rate = 16000
    samples = bursts(rate, [(3.0, 0.3)])
    # 0.2 s of queue, a decoder slower than the input: blocks must be dropped and counted.
    session, _, _, rec, fake, _ = run_session(
        samples,
        rate,
        [160],
        recognizer=FakeRecognizer(decode_delay_s=0.05),
        max_queued_s=0.2,
        block_delay_s=0.001,
    )
    summary = session.summary
    assert summary.dropped_blocks > 0
    assert summary.blocks == len(fake.delivered_sizes)
    fed = sum(rec.streams[0].accepted_block_sizes)
    assert fed + summary.dropped_blocks * 160 == samples.shape[0]
    assert summary.dropped_s == pytest.approx(summary.dropped_blocks * 160 / rate)
    assert summary.audio_s == pytest.approx(fed / rate)


def test_endpoint_rules_split_segments_as_configured():
    rate = 16000
    samples = bursts(rate, PATTERN)
    # Trailing silence of 2 s between bursts: a 3 s rule 2 never fires, so one segment at the end.
    _, segments, _, _, _, _ = run_session(
        samples, rate, [1600], endpoint=EndpointConfig(rule2_min_trailing_silence_s=3.0)
    )
    assert [len(s.tokens) for s in segments] == [16]
    # Endpointing off: same.
    _, segments, _, _, _, _ = run_session(samples, rate, [1600], endpoint=EndpointConfig(enabled=False))
    assert len(segments) == 1
    # Rule 3 (maximum utterance length) cuts continuous speech. (Trailing silence from the decoder only:
    # to an energy detector an endless steady tone becomes the background.)
    long_tone = bursts(rate, [(5.0, 0.3)])
    _, segments, _, _, _, _ = run_session(
        long_tone,
        rate,
        [1600],
        endpoint=EndpointConfig(rule3_min_utterance_length_s=2.0, silence_from="decoder"),
    )
    assert len(segments) == 3
    assert all(s.end - s.start <= 2.0 + 1e-6 for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    assert segments[0].start == 0.0 and segments[1].start == pytest.approx(segments[0].end)


def test_partial_events_grow_and_clear_at_each_endpoint():
    rate = 16000
    samples = bursts(rate, PATTERN)
    _, segments, events, _, _, _ = run_session(samples, rate, [800])
    flow = [e for e in events if not isinstance(e, StatusEvent)]
    previous = ""
    finalized = []
    for i, event in enumerate(flow):
        if isinstance(event, PartialEvent):
            # Within an utterance each partial extends the previous one; "" marks a fresh utterance.
            assert event.text == "" or event.text.startswith(previous), (previous, event.text)
            previous = event.text
        else:
            assert event.segment.text == previous  # the final text is the last partial
            finalized.append(event.segment.text)
            assert isinstance(flow[i + 1], PartialEvent) and flow[i + 1].text == ""
    assert finalized == texts(segments) and len(finalized) == 2
    assert any(isinstance(e, PartialEvent) and e.text == "w5 w6" for e in flow)


def test_duration_stops_by_itself_at_exactly_that_much_audio():
    rate = 16000
    samples = bursts(rate, PATTERN)
    session, segments, _, _, _, _ = run_session(samples, rate, [333], duration_s=1.05)
    assert session.summary.audio_s == pytest.approx(1.05)
    assert session.summary.stop_reason == "duration"
    # The burst is cut at 1.05 s: tokens 5..10 (0.5 s to 1.05 s, padded last chunk included).
    assert segments and segments[0].tokens[0].text == "w5"


def test_device_gone_mid_stream_finalizes_then_raises():
    rate = 16000
    samples = bursts(rate, PATTERN)
    session, segments, _, _, _, error = run_session(samples, rate, [1600], vanish_after=30)
    assert isinstance(error, DeviceError)
    assert "went away" in str(error) and "\n" not in str(error)
    # The first burst (before 3.0 s) was finalized and published before the error.
    assert segments and len(segments[0].tokens) == 10
    assert session.summary.stop_reason == "device-lost"


def test_stalled_device_is_detected():
    rate = 16000
    samples = bursts(rate, PATTERN)
    session, segments, _, _, _, error = run_session(
        samples, rate, [1600], stall_after=14, stall_timeout_s=0.3
    )
    assert isinstance(error, DeviceError) and "stopped delivering audio" in str(error)
    # 1.4 s was delivered: the partial of the first burst (0.5..1.4 s) was finalized.
    assert len(segments) == 1 and len(segments[0].tokens) == 9
    assert session.summary.audio_s == pytest.approx(1.4)


def test_device_that_never_delivers_is_an_error(monkeypatch):
    monkeypatch.setattr(lv, "FIRST_BLOCK_TIMEOUT_S", 0.4)
    rate = 16000
    started = time.monotonic()
    session, segments, _, _, _, error = run_session(
        bursts(rate, PATTERN), rate, [1600], stall_after=0, stall_timeout_s=0.1
    )
    # The first block gets the longer grace (0.4 s), not the 0.1 s allowed between blocks.
    assert 0.4 <= time.monotonic() - started < 5.0
    assert isinstance(error, DeviceError) and "stopped delivering audio after 0.0 s" in str(error)
    assert segments == [] and session.summary.blocks == 0


def test_ctrl_c_finalizes_the_partial_and_writes_it(tmp_path: Path):
    handler_before = signal.getsignal(signal.SIGINT)  # default, or SIG_IGN under nohup
    rate = 16000
    samples = bursts(rate, [(0.2, 0.0), (5.0, 0.3)])
    rec = FakeRecognizer(EndpointConfig(rule2_min_trailing_silence_s=1.0))
    session = LiveTranscriber(
        rec,
        stream_factory=functools.partial(FileInputStream, samples=samples, samplerate=rate, speed=1.0),
    )
    out = tmp_path / "live.jsonl"
    writer = SegmentWriter(out, "jsonl")
    timer = threading.Timer(1.2, signal.raise_signal, args=(signal.SIGINT,))
    started = time.monotonic()
    try:
        with stop_on_sigint(session):
            timer.start()
            for event in session.events(timeout_s=30):
                if isinstance(event, SegmentEvent):
                    writer.write(event.segment)
    finally:
        timer.cancel()  # never let a late SIGINT reach pytest itself
    writer.close()
    elapsed = time.monotonic() - started
    assert elapsed < 3.0  # stopped by the interrupt, not by the end of the 5.2 s input
    assert session.summary.stop_reason == "interrupted"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 1
    rec_tokens = records[0]["tokens"]
    # Everything captured before the interrupt (~1.2 s, tone from 0.2 s) was decoded and written.
    assert len(rec_tokens) >= 8
    assert records[0]["text"].startswith("w2 w3 w4")
    assert session.summary.audio_s == pytest.approx(1.2, abs=0.3)
    # The SIGINT handler is removed afterwards: the one from before is back.
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_latency_is_wall_clock_from_audio_arrival_to_token():
    """At 1x speed a token cannot come out before its 0.1 s chunk has fully arrived."""
    rate = 16000
    samples = bursts(rate, [(1.5, 0.3)])
    rec = FakeRecognizer()
    session = LiveTranscriber(
        rec,
        stream_factory=functools.partial(
            FileInputStream, samples=samples, samplerate=rate, speed=1.0, blocksize=160
        ),
    )
    summary = session.run()
    assert summary.tokens == 15 == len(summary.latencies_ms)
    # Chunk wait (token at chunk start, emitted after the chunk end): ~100 ms, minus one 10 ms block.
    assert min(summary.latencies_ms) >= 80.0
    assert summary.latency_p95_ms < 1000.0
    assert summary.latency_p50_ms <= summary.latency_p95_ms <= summary.latency_max_ms
    assert summary.rtf is not None and summary.rtf < 1.0


def test_file_input_stream_plays_at_real_time(tmp_path: Path):
    rate = 8000
    wav = tmp_path / "a.wav"
    sf.write(wav, bursts(rate, [(0.6, 0.3)], channels=2), rate)
    rec = FakeRecognizer()
    started = time.monotonic()
    session = LiveTranscriber(rec, input_file=wav)
    summary = session.run()
    elapsed = time.monotonic() - started
    assert session.capture_rate_hz == 8000 and session.capture_channels == 2
    assert summary.audio_s == pytest.approx(0.6)
    assert 0.55 <= elapsed < 3.0
    assert summary.stop_reason == "end-of-input"


def test_bad_settings_fail_early():
    rec = FakeRecognizer()
    with pytest.raises(ValueError, match="duration"):
        LiveTranscriber(rec, input_file="x.wav", duration_s=0)
    with pytest.raises(ValueError, match="not both"):
        LiveTranscriber(rec, input_file="x.wav", input_device=1)


DEVICES = [
    InputDevice(0, "pulse", "ALSA", 32, 44100.0, False),
    InputDevice(1, "default", "ALSA", 32, 44100.0, True),
    InputDevice(3, "USB Mic: Audio (hw:1,0)", "ALSA", 1, 48000.0, False),
    InputDevice(4, "USB Mic: Audio Monitor", "ALSA", 2, 48000.0, False),
]


def test_resolve_input_device():
    assert resolve_input_device(None, DEVICES).index == 1
    assert resolve_input_device("3", DEVICES).index == 3
    assert resolve_input_device(0, DEVICES).name == "pulse"
    assert resolve_input_device("pulse", DEVICES).index == 0
    assert resolve_input_device("hw:1", DEVICES).index == 3
    with pytest.raises(DeviceError, match="ambiguous"):
        resolve_input_device("usb mic", DEVICES)
    with pytest.raises(DeviceError, match="no input device with index 7"):
        resolve_input_device(7, DEVICES)
    with pytest.raises(DeviceError, match="no input device matches"):
        resolve_input_device("bluetooth", DEVICES)
    with pytest.raises(DeviceError, match="no audio input device found"):
        resolve_input_device(None, [])


SEGMENTS = [
    Segment(0.5, 1.25, " hello world", [Word("hello", 0.5, 0.8)], [Token("▁HELLO", 0.5, 7)]),
    Segment(2.0, 2.0, "again", [], []),
    Segment(3.0, 4.5, "   ", [], []),  # empty text: never written
]


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "srt", "vtt"])
def test_segment_writer_appends_and_flushes_each_segment(tmp_path: Path, fmt: str):
    out = tmp_path / f"o.{fmt}"
    writer = SegmentWriter(out, fmt)
    writer.write(SEGMENTS[0])
    first = out.read_text()  # readable before close: flushed per segment
    assert "hello world" in first
    for seg in SEGMENTS[1:]:
        writer.write(seg)
    writer.close()
    text = out.read_text()
    assert text.startswith(first)
    if fmt == "txt":
        assert text == "hello world\nagain\n"
    elif fmt == "jsonl":
        rows = [json.loads(x) for x in text.splitlines()]
        assert [r["text"] for r in rows] == ["hello world", "again"]
        assert rows[0]["words"] == [{"word": "hello", "start": 0.5, "end": 0.8}]
        assert rows[0]["tokens"] == [{"token": "▁HELLO", "start": 0.5}]
    elif fmt == "srt":
        assert text == (
            "1\n00:00:00,500 --> 00:00:01,250\nhello world\n\n2\n00:00:02,000 --> 00:00:02,001\nagain\n\n"
        )
    else:
        assert text.startswith("WEBVTT\n\n") and text.count("WEBVTT") == 1
        assert "00:00:00.500 --> 00:00:01.250\nhello world\n" in text


def test_format_helpers(tmp_path):
    assert timestamp(3723.25, digits=1) in ("01:02:03.2", "01:02:03.3")
    assert timestamp(0, digits=1) == "00:00:00.0"
    assert timestamp(3725.0, digits=2, always_hours=False) == "1:02:05.00"
    assert pick_format(None, Path("a.SRT"), LIVE_FORMATS) == "srt"
    assert pick_format(None, Path("a.jsonl"), LIVE_FORMATS) == "jsonl"
    assert pick_format(None, None, LIVE_FORMATS) == "txt"
    # The one rule for both commands: an extension that is no format is refused, not guessed.
    with pytest.raises(ValueError, match=r"\.out is not an output format"):
        pick_format(None, Path("a.out"), LIVE_FORMATS)
    assert pick_format("txt", Path("a.out"), LIVE_FORMATS) == "txt"
    with pytest.raises(ValueError, match="--format must be one of txt, jsonl"):
        pick_format("json", Path("a.json"), LIVE_FORMATS)
    with pytest.raises(ValueError, match="unknown live output format"):
        SegmentWriter(tmp_path / "x", "json")


def test_renderer_prints_plain_final_lines_when_not_a_terminal():
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False)
    renderer = LiveRenderer(console)
    with renderer:
        renderer(PartialEvent("hel"))
        renderer(SegmentEvent(Segment(61.0, 62.0, "hello [world]")))
        renderer(PartialEvent(""))
    assert buffer.getvalue() == "[00:01:01.0] hello [world]\n"


def test_renderer_on_a_terminal_keeps_the_partial_on_one_line():
    import io

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=40, color_system=None)
    renderer = LiveRenderer(console)
    status = lv.LiveStatus(1.5, -20.0, 300.0, 450.0, 0.1, "CPUExecutionProvider", 2, 1, 0)
    with renderer:
        renderer(StatusEvent(status))
        renderer(PartialEvent("word " * 30 + "newest"))
        assert renderer._renderable().plain.splitlines()[0].endswith("newest")
        assert all(len(line) <= 40 for line in renderer._renderable().plain.splitlines())
        line = status_line(status)
        assert "overflow 2 dropped 1" in line and "p95 450 ms" in line and len(line) < 100
        renderer(SegmentEvent(Segment(1.0, 2.0, "done")))
    assert "[00:00:01.0] done" in buffer.getvalue()
