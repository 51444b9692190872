"""Recognizer/Stream API: verbs, validation, clocks, resets, endpoints, resampling, flat memory."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED

from streamcli.endpoint import EndpointConfig
from streamcli.errors import ModelError
from streamcli.families import create_recognizer
from streamcli.recognizer import RecognizerConfig
from streamcli.results import Segment

REPO = Path(__file__).resolve().parent.parent

from streamcli_tools.devtools.sherpa_parity import load_16k  # noqa: E402

WAVS = sorted((SHARED / "models").glob("*/test_wavs"))
NEEDS_WAVS = pytest.mark.skipif(not WAVS, reason="needs ../shared/models/*/test_wavs")


@pytest.fixture(scope="module")
def rec(test_zipformer_dir):
    return create_recognizer(
        RecognizerConfig(
            model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False)
        )
    )


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    if not WAVS:
        pytest.skip("needs ../shared/models/*/test_wavs")
    return load_16k(WAVS[0] / "1.wav")


def _run(stream, samples: np.ndarray, block: int | None = None, rate: int = 16000) -> list:
    emitted = []
    block = block or max(1, samples.size)
    for i in range(0, samples.size, block):
        stream.accept_waveform(rate, samples[i : i + block])
        emitted += stream.decode_ready()
    emitted += stream.finish()
    return emitted


def test_decode_ready_and_finish_are_the_verb_loop(rec, speech):
    """``decode_ready()`` / ``finish()`` emit exactly what the explicit is_ready/decode loop emits."""
    samples = speech
    explicit = _run(rec.create_stream(), samples, block=4000)
    s = rec.create_stream()
    helper: list = []
    for i in range(0, samples.size, 4000):
        s.accept_waveform(16000, samples[i : i + 4000])
        helper += s.decode_ready()
        assert not s.is_ready()
    helper += s.finish()
    assert explicit and helper == explicit
    assert s.finish() == [] and not s.is_ready()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decoding": "viterbi"}, "decoding"),
        ({"beam": 0}, "beam"),
        ({"device": "tpu"}, "device"),
        ({"device": "cpu:1"}, "device"),
        ({"threads": -1}, "threads"),
        ({"window_frames": 100, "overlap_frames": 100}, "overlap_frames"),
        ({"window_frames": -5}, "window_frames"),
    ],
)
def test_config_is_validated_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecognizerConfig(model="unused", **kwargs).validate()


def test_missing_or_bad_model_folder(tmp_path):
    with pytest.raises(ModelError):
        create_recognizer(RecognizerConfig(model=str(tmp_path / "nope"), device="cpu"))
    (tmp_path / "tokens.txt").write_text("<blk> 0\n")
    with pytest.raises(ModelError, match="encoder"):
        create_recognizer(RecognizerConfig(model=str(tmp_path), device="cpu"))
    (tmp_path / "encoder.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError):
        create_recognizer(RecognizerConfig(model=str(tmp_path), device="cpu"))


def _folder_with_model_type(tmp_path: Path, model_type: str) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"model_type": model_type})
    onnx.save(model, str(tmp_path / "encoder.onnx"))
    (tmp_path / "tokens.txt").write_text("<blk> 0\na 1\n")
    return tmp_path


def test_dispatch_on_model_type(tmp_path, monkeypatch):
    folder = _folder_with_model_type(tmp_path, "wctc")
    seen = {}

    class FakeWctc:
        def __init__(self, config, folder, metadata):
            seen.update(config=config, folder=folder, metadata=metadata)

    fake = types.SimpleNamespace(WctcRecognizer=FakeWctc)
    monkeypatch.setitem(sys.modules, "streamcli.families.wctc", fake)
    cfg = RecognizerConfig(model=str(folder), device="cpu")
    assert isinstance(create_recognizer(cfg), FakeWctc)
    assert seen["folder"] == folder and seen["metadata"]["model_type"] == "wctc" and seen["config"] is cfg


def test_unknown_model_type_is_a_model_error(tmp_path):
    folder = _folder_with_model_type(tmp_path, "conformer")
    with pytest.raises(ModelError, match="unsupported model_type 'conformer'"):
        create_recognizer(RecognizerConfig(model=str(folder), device="cpu"))


def test_empty_audio_is_an_empty_transcript(rec):
    s = rec.create_stream()
    s.accept_waveform(16000, np.zeros(0, np.float32))
    s.input_finished()
    assert not s.is_ready() and s.decode() == []
    assert s.result().text == "" and s.result().tokens == []
    assert s.reset() is None
    assert s.received_s == 0 and s.decoded_s == 0 and s.tail_padding_samples == 0


def test_bad_samples_are_value_errors(rec):
    s = rec.create_stream()
    with pytest.raises(ValueError, match="NaN"):
        s.accept_waveform(16000, np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="float"):
        s.accept_waveform(16000, np.zeros(10, np.int16))
    with pytest.raises(ValueError, match="mono"):
        s.accept_waveform(16000, np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        s.accept_waveform(0, np.zeros(10, np.float32))
    s.accept_waveform(16000, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="sample rate changed"):
        s.accept_waveform(8000, np.zeros(10, np.float32))
    s.input_finished()
    with pytest.raises(ValueError, match="after input_finished"):
        s.accept_waveform(16000, np.zeros(10, np.float32))


def test_streaming_blocks_equal_one_shot_and_times_are_sane(rec, speech):
    one = rec.create_stream()
    _run(one, speech)
    blocks = rec.create_stream()
    emitted = _run(blocks, speech, block=1234)
    ref = one.result()
    got = blocks.result()
    assert [(t.id, t.start) for t in got.tokens] == [(t.id, t.start) for t in ref.tokens]
    assert got.text == ref.text and got.text
    # decode() returned exactly the tokens of the final hypothesis, in order
    assert [(t.id, t.start) for t in emitted] == [(t.id, t.start) for t in got.tokens]
    starts = [t.start for t in got.tokens]
    assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] < blocks.received_s
    assert all(abs(t / 0.04 - round(t / 0.04)) < 1e-6 for t in starts)  # 40 ms encoder frames
    words = got.words
    assert words and " ".join(w.word for w in words) == got.text
    assert all(w.start <= w.end for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    assert blocks.received_s == pytest.approx(speech.size / 16000)
    assert blocks.decoded_s == pytest.approx(blocks.received_s)
    chunks = (speech.size // 160) // 32 + 1
    assert len(blocks.chunk_times_ms) == chunks and all(ms > 0 for ms in blocks.chunk_times_ms)


@NEEDS_WAVS
def test_8khz_input_is_resampled_like_soxr(rec):
    import soundfile as sf

    raw, rate = sf.read(str(WAVS[0] / "8k.wav"), dtype="float32")
    assert rate == 8000
    s8 = rec.create_stream()
    _run(s8, raw, block=3000, rate=8000)
    s16 = rec.create_stream()
    _run(s16, load_16k(WAVS[0] / "8k.wav"))
    assert [(t.id, t.start) for t in s8.result().tokens] == [(t.id, t.start) for t in s16.result().tokens]
    assert s8.received_s == pytest.approx(raw.size / 8000)


def test_reset_finalizes_segments_with_absolute_times(rec, speech):
    s = rec.create_stream()
    half = speech.size // 2
    s.accept_waveform(16000, speech[:half])
    s.decode_ready()
    before = s.result()
    seg = s.reset()
    assert isinstance(seg, Segment) and seg.text == before.text
    assert seg.start == before.words[0].start and seg.end == before.words[-1].end
    assert s.result().text == "" and s.result().tokens == []
    s.accept_waveform(16000, speech[half:])
    s.finish()
    seg2 = s.reset()
    assert seg2 is not None and seg2.tokens[0].start >= seg.tokens[-1].start
    assert seg2.tokens[-1].start < s.received_s


def test_endpoint_after_trailing_silence(test_zipformer_dir, speech):
    cfg = EndpointConfig(rule2_min_trailing_silence_s=1.0, silence_from="decoder")
    rec = create_recognizer(
        RecognizerConfig(model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=cfg)
    )
    s = rec.create_stream()
    s.accept_waveform(16000, speech[: 16000 * 4])
    s.decode_ready()
    assert s.result().text and not s.is_endpoint()
    fired_at = None
    s.accept_waveform(16000, np.zeros(16000 * 3, np.float32))  # the test model is silent on silence
    while s.is_ready():
        s.decode()
        if s.is_endpoint():
            fired_at = s.decoded_s
            break
    assert fired_at is not None and s._endpoint.last_rule == 2
    assert fired_at >= s.result().tokens[-1].start + 1.0
    off = create_recognizer(
        RecognizerConfig(
            model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False)
        )
    )
    s2 = off.create_stream()
    _run(s2, np.concatenate([speech[: 16000 * 4], np.zeros(16000 * 3, np.float32)]))
    assert not s2.is_endpoint()


def test_memory_stays_flat_over_a_long_stream(rec):
    # 2 minutes of noise in 1 s blocks: the stream never holds more than about one chunk of frames
    rng = np.random.default_rng(0)
    s = rec.create_stream()
    held = []
    block = (rng.standard_normal(16000) * 0.05).astype(np.float32)
    for _ in range(120):
        s.accept_waveform(16000, block)
        s.decode_ready()
        held.append(s._fbank.num_frames_ready - s._fbank.first_kept_frame)
    assert max(held) <= rec.info.chunk_frames + 100 + 1
    assert s.decoded_s > 119
    assert max(held[60:]) <= max(held[:60])  # no growth with stream length


def test_stream_driver_segments_match_for_any_block_cut_and_in_a_batch(test_zipformer_dir, speech):
    """The one streaming loop: endpoints per window (not per block), so block size and batching
    change nothing; every segment has text, times grow, and finish() closes the last utterance."""
    from streamcli.recognizer import StreamDriver, decode_batch

    ep = create_recognizer(RecognizerConfig(model=str(test_zipformer_dir), device="cpu", threads=1))
    audio = np.concatenate([speech, np.zeros(16000 * 3, np.float32), speech])

    def drive(block: int) -> list[tuple[str, float, float]]:
        partials: list[str] = []
        driver = StreamDriver(ep.create_stream(), on_partial=lambda r: partials.append(r.text))
        segments = []
        for i in range(0, audio.size, block):
            segments += driver.accept_waveform(16000, audio[i : i + block])
        segments += driver.finish()
        assert driver.segments == len(segments) and partials
        assert all(a != b for a, b in zip(partials, partials[1:], strict=False))  # only changes
        return [(s.text, s.start, s.end) for s in segments]

    small, large = drive(1600), drive(48000)
    assert small == large and len(small) >= 2  # the 3 s of silence is an endpoint
    assert all(text.strip() for text, _, _ in small)
    assert all(a[2] <= b[1] for a, b in zip(small, small[1:], strict=False))

    drivers = [StreamDriver(ep.create_stream()) for _ in range(3)]
    batched: list[list] = [[], [], []]
    for i in range(0, audio.size, 16000):
        for d in drivers:
            d.stream.accept_waveform(16000, audio[i : i + 16000])
        while decoded := decode_batch(ep, drivers):
            for d, window in decoded:
                if window.closed:
                    batched[drivers.index(d)] += d.take_finals()
    for k, d in enumerate(drivers):
        batched[k] += d.finish()
        assert [(s.text, s.start, s.end) for s in batched[k]] == small
