"""transcribe()[0]: end to end on real dev audio with the test zipformer; invariants, streaming, errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from paths import SHARED

from streamcli.audio import read_audio
from streamcli.endpoint import EndpointConfig
from streamcli.errors import AudioError
from streamcli.families import create_recognizer
from streamcli.recognizer import RecognizerConfig
from streamcli.transcription import transcribe

DEV = SHARED / "data" / "dev"
WAV_8K = (
    SHARED / "models" / "sherpa-onnx-streaming-zipformer-en-2023-06-26-TESTDATA-ONLY" / "test_wavs" / "8k.wav"
)
FLAC_16K = DEV / "librispeech/test-other/1688/1688-142285-0002.flac"
WAV_22K = DEV / "ljspeech/LJ001-0004.wav"
FLAC_44K_STEREO_24 = DEV / "jfk/jfk_openai_whisper.flac"
INPUTS = [FLAC_16K, WAV_22K, FLAC_44K_STEREO_24, WAV_8K]


@pytest.fixture(scope="module")
def recognizer(test_zipformer_dir):
    return create_recognizer(RecognizerConfig(model=str(test_zipformer_dir), device="cpu", threads=1))


@pytest.fixture(scope="module")
def recognizer_no_endpoint(test_zipformer_dir):
    return create_recognizer(
        RecognizerConfig(
            model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False)
        )
    )


def check_invariants(segments, duration_s: float) -> None:
    previous_end = 0.0
    for seg in segments:
        assert seg.text.strip()
        assert 0.0 <= seg.start <= seg.end <= duration_s + 0.05
        assert seg.start >= previous_end - 1e-6, "segments overlap or go back in time"
        previous_end = seg.end
        token_times = [t.start for t in seg.tokens]
        assert token_times == sorted(token_times)
        assert seg.tokens and seg.start <= token_times[0] and token_times[-1] <= seg.end + 1e-6
        for w in seg.words:
            assert seg.start - 1e-6 <= w.start <= w.end <= seg.end + 1e-6
        assert " ".join(w.word for w in seg.words) == seg.text.strip()


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_real_audio_every_rate_and_layout(recognizer, path):
    info = sf.info(path)
    flow, stats = transcribe(path, recognizer)
    segments = list(flow)
    assert segments, "speech gives text with the test model"
    check_invariants(segments, info.duration)
    assert stats.audio.sample_rate == info.samplerate and stats.audio.channels == info.channels
    assert stats.audio_s == pytest.approx(info.duration, abs=0.01)
    assert stats.chunk_times_ms and stats.elapsed_s > 0 and stats.rtf > 0
    assert stats.provider == "CPUExecutionProvider"


def test_block_size_and_source_kind_do_not_change_the_result(recognizer):
    by_path = list(transcribe(FLAC_44K_STEREO_24, recognizer, block_s=0.1)[0])
    big_blocks = list(transcribe(FLAC_44K_STEREO_24, recognizer, block_s=1.3)[0])
    assert [(s.text, s.start, s.end) for s in big_blocks] == [(s.text, s.start, s.end) for s in by_path]
    samples, rate = read_audio(FLAC_16K)
    from_array = list(transcribe(samples, recognizer, sample_rate=rate)[0])
    from_path = list(transcribe(FLAC_16K, recognizer)[0])
    assert [s.tokens for s in from_array] == [s.tokens for s in from_path]


def test_matches_one_stream_fed_the_whole_file(recognizer_no_endpoint):
    samples, rate = read_audio(WAV_22K, target_rate=16000)
    stream = recognizer_no_endpoint.create_stream()
    stream.accept_waveform(rate, samples)
    stream.finish()
    expected = stream.result()
    segments = list(transcribe(WAV_22K, recognizer_no_endpoint)[0])
    assert len(segments) == 1
    assert segments[0].text == expected.text
    assert [t.id for t in segments[0].tokens] == [t.id for t in expected.tokens]


def two_utterances(tmp_path: Path, gap_s: float = 3.0) -> tuple[Path, float]:
    a, rate = read_audio(DEV / "ljspeech/LJ001-0008.wav", target_rate=16000)
    b, _ = read_audio(DEV / "ljspeech/LJ001-0002.wav", target_rate=16000)
    x = np.concatenate([a, np.zeros(round(gap_s * rate), np.float32), b])
    path = tmp_path / "two.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    return path, a.size / rate


def test_endpoint_splits_at_silence_and_text_flows_before_the_end(recognizer, tmp_path):
    path, first_len_s = two_utterances(tmp_path)
    flow, stats = transcribe(path, recognizer)
    assert stats.audio is not None and stats.audio_s == 0.0  # known before any decoding
    audio_at_yield = []
    segments = []
    for seg in flow:
        audio_at_yield.append(stats.audio_s)
        segments.append(seg)
    assert len(segments) >= 2
    check_invariants(segments, stats.audio_s)
    # the first segment came out while the second utterance was still unread
    assert audio_at_yield[0] < first_len_s + 3.0
    # and it ends before the gap, the next one starts after it
    assert segments[0].end <= first_len_s + 0.5
    assert segments[-1].start >= first_len_s + 2.5


def test_partials_grow_chunk_by_chunk_and_end_as_the_segment(recognizer):
    events: list[tuple[str, str]] = []
    for seg in transcribe(WAV_22K, recognizer, on_partial=lambda r: events.append(("partial", r.text)))[0]:
        events.append(("segment", seg.text))
    partials = [text for kind, text in events if kind == "partial"]
    assert len({p for p in partials if p}) > 2, "the hypothesis grew while decoding"
    # Published only when the hypothesis changed: never the same text twice in a row.
    assert all(a != b for a, b in zip(partials, partials[1:], strict=False))
    previous = ""
    for index, (kind, text) in enumerate(events):
        if kind == "segment":
            assert events[index - 1] == ("partial", text), "a segment is the last partial of its utterance"
            previous = ""
        else:
            assert text.startswith(previous), "greedy partials only extend within an utterance"
            previous = text


def test_zero_length_and_silence_give_no_segments(recognizer, tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    flow, stats = transcribe(empty, recognizer)
    assert list(flow) == []
    assert stats.audio_s == 0.0
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 4, np.float32), 16000, subtype="PCM_16")
    assert list(transcribe(silent, recognizer)[0]) == []


def test_truncated_file_raises_after_the_segments_before_the_cut(recognizer, tmp_path):
    path, _ = two_utterances(tmp_path)
    flac = tmp_path / "two.flac"
    sf.write(flac, sf.read(path, dtype="float32")[0], 16000)
    cut = tmp_path / "cut.flac"
    data = flac.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.8)])
    got = []
    with pytest.raises(AudioError, match="cut.flac: truncated"):
        for seg in transcribe(cut, recognizer)[0]:
            got.append(seg)
    assert got, "the utterance before the cut was finalized and yielded"


def test_realtime_paces_at_one_x(recognizer, tmp_path):
    x, rate = read_audio(FLAC_16K)
    short = tmp_path / "short.wav"
    sf.write(short, x[: rate * 3 // 2], rate)
    t0 = time.perf_counter()
    list(transcribe(short, recognizer)[0])
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    flow, stats = transcribe(short, recognizer, realtime=True)
    list(flow)
    paced_s = time.perf_counter() - t0
    assert paced_s >= 1.4  # 1.5 s of audio, the last block enters at ~1.4 s
    assert fast_s < paced_s
    # the RTF counts processing, not the waits for the 1x pace
    assert stats.paced_s > 0.5 and stats.rtf < 0.8 * stats.elapsed_s / stats.audio_s


def test_dev_set_sample_invariants(recognizer):
    """Every 12th file of the dev set (all formats, rates and channel layouts in it) end to end."""
    import csv

    with open(DEV / "dev.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    picked = rows[::12] + [r for r in rows if sf.info(DEV / r["path"]).channels > 1]
    with_text = 0
    for row in picked:
        path = DEV / row["path"]
        flow, stats = transcribe(path, recognizer)
        segments = list(flow)
        check_invariants(segments, float(row["duration_seconds"]))
        assert stats.audio_s == pytest.approx(float(row["duration_seconds"]), abs=0.02)
        with_text += bool(segments)
    assert with_text >= 0.9 * len(picked)


def test_public_api_names_resolve_and_transcribe_from_the_package(test_zipformer_dir):
    """Every name in streamcli.__all__ resolves (lazily), and the README's three-line use works."""
    import streamcli

    for name in streamcli.__all__:
        assert getattr(streamcli, name) is not None, name
    rec = streamcli.create_recognizer(streamcli.RecognizerConfig(model=str(test_zipformer_dir), device="cpu"))
    segments, info = streamcli.transcribe(WAV_22K, rec)
    assert info.audio is not None and info.audio.sample_rate == 22050
    texts = [s.text for s in segments]
    assert texts and info.segments == len(texts) and info.audio_s > 0
