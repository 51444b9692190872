"""ONNX export of the windowed-CTC encoder and its runtime family (streamcli.families.wctc).

A tiny random model is exported into a tmp dir once per module; onnxruntime streaming must equal the
torch full-sequence reference, one file must serve several W/O, and the recognizer built by
create_recognizer must batch streams without changing their results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from streamcli_tools.train.export import CACHE_NAMES, export_model_dir  # noqa: E402
from streamcli_tools.train.wctc_torch import WctcConfig, WctcModel, char_tokens  # noqa: E402

from streamcli.families import create_recognizer  # noqa: E402
from streamcli.recognizer import RecognizerConfig  # noqa: E402

TINY = WctcConfig(
    d_model=32, num_layers=2, num_heads=2, ff_dim=64, conv_kernel=5, max_rel_distance=6, vocab_size=55
)
EXPORT_W, EXPORT_O = 100, 25


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[WctcModel, Path]:
    torch.manual_seed(0)
    model = WctcModel(TINY).eval()
    for layer in model.layers:
        layer.attn.rel_bias.data.normal_(0.0, 1.0)
    # Make the blank less dominant so random weights emit tokens (the batch test compares tokens).
    model.head.bias.data[0] = -3.0
    folder = tmp_path_factory.mktemp("wctc-tiny")
    export_model_dir(model, folder, EXPORT_W, EXPORT_O, char_tokens())
    return model, folder


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])


def _ort_stream(sess, model: WctcModel, x: np.ndarray, window: int, overlap: int) -> np.ndarray:
    hop = window - overlap
    caches = {k: v.numpy() for k, v in model.initial_cache(x.shape[0], overlap).items()}
    outs = []
    for start in range(0, x.shape[1], hop):
        res = sess.run(None, {"x": x[:, start : start + hop], **caches})
        outs.append(res[0])
        new = dict(zip(CACHE_NAMES, res[1:], strict=True))
        for name in CACHE_NAMES:
            assert new[name].shape == caches[name].shape, name
        caches = new
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize(("window", "overlap", "frames"), [(100, 25, 455), (50, 0, 230), (200, 100, 610)])
def test_one_onnx_file_serves_several_windows_exactly(exported, window, overlap, frames):
    model, folder = exported
    sess = _session(folder)
    rng = np.random.default_rng(window)
    x = rng.standard_normal((2, frames, 80)).astype(np.float32) * 3
    with torch.no_grad():
        ref = model.forward_full(torch.from_numpy(x), window, overlap).numpy()
    got = _ort_stream(sess, model, x, window, overlap)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_full_context_call_with_empty_caches(exported):
    """The bench baseline: all frames as x, 0-length key/value caches = unmasked full attention."""
    model, folder = exported
    x = np.random.default_rng(1).standard_normal((1, 300, 80)).astype(np.float32)
    empty = {k: v.numpy() for k, v in model.initial_cache(1, 0).items()}
    logits, new_key, *_ = _session(folder).run(None, {"x": x, **empty})
    with torch.no_grad():
        ref = model.forward_full(torch.from_numpy(x), 300, 0).numpy()
    assert np.abs(logits - ref).max() <= 1e-4
    assert new_key.shape[2] == 0


def test_interface_names_shapes_and_metadata(exported):
    model, folder = exported
    sess = _session(folder)
    assert [i.name for i in sess.get_inputs()] == ["x", *CACHE_NAMES]
    assert [o.name for o in sess.get_outputs()] == ["logits", *(f"new_{n}" for n in CACHE_NAMES)]
    x_shape = sess.get_inputs()[0].shape
    assert isinstance(x_shape[0], str) and isinstance(x_shape[1], str) and x_shape[2] == 80
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "wctc"
    assert (meta["window_frames"], meta["overlap_frames"]) == (str(EXPORT_W), str(EXPORT_O))
    assert meta["frame_shift_ms"] == "10" and meta["feature_dim"] == "80" and meta["subsampling"] == "5"
    assert meta["vocab_size"] == "55" and meta["blank_id"] == "0"
    shapes = json.loads(meta["cache_shapes"])
    assert shapes["cache_key"] == ["N", TINY.num_layers, "overlap_frames/5", TINY.d_model]
    assert shapes["cache_conv"] == ["N", TINY.num_layers, TINY.d_model, TINY.conv_kernel - 1]
    for name in CACHE_NAMES:
        assert json.loads(meta[f"{name}_shape"]) == shapes[name]
    tokens = (folder / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[0] == "<blk> 0" and len(tokens) == 55


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (tone * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _decode_alone(rec, audio: np.ndarray):
    s = rec.create_stream()
    s.accept_waveform(16000, audio)
    s.finish()
    return s.result()


def test_recognizer_batch_equals_single_streams(exported):
    _, folder = exported
    rec = create_recognizer(RecognizerConfig(model=folder, device="cpu", threads=1))
    assert rec.info.family == "wctc"
    assert (rec.info.window_frames, rec.info.overlap_frames) == (EXPORT_W, EXPORT_O)
    assert rec.info.chunk_frames == rec.info.shift_frames == EXPORT_W - EXPORT_O
    audios = [_speech_like(s, i) for i, s in enumerate((3.1, 4.0, 2.37))]
    streams = [rec.create_stream() for _ in audios]
    for s, a in zip(streams, audios, strict=True):
        s.accept_waveform(16000, a)
        s.input_finished()
    while any(s.is_ready() for s in streams):
        rec.decode_streams(streams)
    for s, a in zip(streams, audios, strict=True):
        alone = _decode_alone(rec, a)
        assert alone.tokens, "random model emitted nothing: the comparison would be vacuous"
        assert s.result().tokens == alone.tokens
        starts = [t.start for t in alone.tokens]
        # Tokens may come from the zero padding that completes the last hop, never from beyond it.
        hop_s = rec.info.shift_frames * rec.info.frame_shift_ms / 1000
        assert starts == sorted(starts) and starts[-1] < len(a) / 16000 + hop_s + 0.02


def test_recognizer_window_override_and_validation(exported):
    model, folder = exported
    rec = create_recognizer(
        RecognizerConfig(model=folder, device="cpu", threads=1, window_frames=50, overlap_frames=0)
    )
    assert (rec.info.window_frames, rec.info.overlap_frames, rec.info.shift_frames) == (50, 0, 50)
    # The runtime streams the same numbers as the torch reference for the overridden window.
    x = np.random.default_rng(3).standard_normal((230, 80)).astype(np.float32)
    with torch.no_grad():
        ref = model.forward_full(torch.from_numpy(x[None]), 50, 0)[0].numpy()
    assert np.abs(rec.stream_features(x) - ref).max() <= 1e-4
    for w, o in [(52, 25), (100, 22), (50, 50), (50, 75)]:
        with pytest.raises(ValueError):
            create_recognizer(RecognizerConfig(model=folder, device="cpu", window_frames=w, overlap_frames=o))
    with pytest.raises(ValueError):
        create_recognizer(RecognizerConfig(model=folder, device="cpu", decoding="beam"))


def test_export_command(tmp_path):
    from typer.testing import CliRunner

    from streamcli.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["export", "--window", "100", "--overlap", "22", "--out", str(tmp_path / "a")])
    assert bad.exit_code == 2
    assert "multiple of 5" in bad.output and "Traceback" not in bad.output
    no_ckpt = runner.invoke(
        app, ["export", "--window", "100", "--overlap", "25", "--out", str(tmp_path / "b")]
    )
    assert no_ckpt.exit_code == 2 and "--checkpoint" in no_ckpt.output
    ok = runner.invoke(
        app, ["export", "--window", "50", "--overlap", "0", "--out", str(tmp_path / "c"), "--random-init"]
    )
    assert ok.exit_code == 0, ok.output
    meta = ort.InferenceSession(str(tmp_path / "c" / "encoder.onnx")).get_modelmeta().custom_metadata_map
    assert (meta["window_frames"], meta["overlap_frames"], meta["model_type"]) == ("50", "0", "wctc")
    assert (tmp_path / "c" / "tokens.txt").is_file()
