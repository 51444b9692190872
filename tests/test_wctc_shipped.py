"""The shipped windowed-CTC model: present, small, the default, and transcribing through the runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamcli.families import create_recognizer
from streamcli.metrics import cer
from streamcli.providers import read_onnx_metadata
from streamcli.recognizer import RecognizerConfig

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "streamcli-wctc-en-small"
SENTENCE = "the quick brown fox jumps over the lazy dog"
# Measured with the shipped model on this espeak-ng sentence: CER 0.09 (W=100/O=25, "the quick grown
# forx jump sover the lazy dog") and 0.12 (W=200/O=50); an empty output scores 1.0 and a string of common
# letters ~0.8. A broken runtime or model (wrong features, caches, token table) lands far above the limit.
CER_LIMIT = 0.3
# Measured: 1 token on 3 s of digital silence.
SILENCE_MAX_TOKENS = 2


def test_shipped_folder_is_complete_and_small():
    names = sorted(p.name for p in SHIPPED.iterdir())
    assert "encoder.onnx" in names and "tokens.txt" in names and "MODEL_CARD.md" in names
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total <= 30 * 1024 * 1024
    meta = read_onnx_metadata(SHIPPED / "encoder.onnx")
    assert meta["model_type"] == "wctc"
    assert int(meta["window_frames"]) % 5 == 0 and int(meta["overlap_frames"]) % 5 == 0
    assert set(json.loads(meta["cache_names"])) == {"cache_key", "cache_value", "cache_conv", "cache_valid"}
    # The card states the window the file defaults to.
    card = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"W = {meta['window_frames']}" in card and f"O = {meta['overlap_frames']}" in card


def test_shipped_model_is_listed_but_not_the_default():
    from streamcli import registry

    assert SHIPPED.resolve() in [p.resolve() for p in registry.shipped_models()]
    assert Path(registry.default_model_dir()).resolve() != SHIPPED.resolve()  # the two-pass model is


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, int]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (scripts/install.sh installs it)")
    wav = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(wav), SENTENCE], check=True)
    samples, rate = sf.read(str(wav), dtype="float32")
    return samples, rate


def _run(rec, samples: np.ndarray, rate: int):
    s = rec.create_stream()
    for start in range(0, samples.size, 4000):
        s.accept_waveform(rate, samples[start : start + 4000])
        s.decode_ready()
    s.finish()
    return s.result()


def test_shipped_model_transcribes_synthetic_speech(speech):
    samples, rate = speech  # espeak-ng writes 22050 Hz: the stream resamples
    rec = create_recognizer(RecognizerConfig(model=SHIPPED, device="cpu", threads=1))
    assert rec.info.family == "wctc" and rec.info.provider == "CPUExecutionProvider"
    res = _run(rec, samples, rate)
    duration_s = samples.size / rate
    starts = [t.start for t in res.tokens]
    assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] <= duration_s + 1.0
    assert all(w.start <= w.end for w in res.words)
    # Far from perfect (see MODEL_CARD.md), but clearly better than chance on the speech it was trained for.
    assert cer(SENTENCE, res.text) < CER_LIMIT, res.text


def test_shipped_model_other_window_and_batch(speech):
    samples, rate = speech
    rec = create_recognizer(
        RecognizerConfig(model=SHIPPED, device="cpu", threads=1, window_frames=200, overlap_frames=50)
    )
    assert rec.info.shift_frames == 150
    alone = _run(rec, samples, rate)
    assert cer(SENTENCE, alone.text) < CER_LIMIT, alone.text
    streams = [rec.create_stream() for _ in range(3)]
    for s in streams:
        s.accept_waveform(rate, samples)
        s.input_finished()
    while any(s.is_ready() for s in streams):
        rec.decode_streams(streams)
    assert all(s.result().tokens == alone.tokens for s in streams)


def test_shipped_model_stays_quiet_on_silence():
    rec = create_recognizer(RecognizerConfig(model=SHIPPED, device="cpu", threads=1))
    res = _run(rec, np.zeros(16000 * 3, np.float32), 16000)
    assert len(res.tokens) <= SILENCE_MAX_TOKENS, res.text
