"""The test zipformer's interface and the zipformer family runtime (states, batching, beam search)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from paths import SHARED

from streamcli.endpoint import EndpointConfig
from streamcli.errors import ModelError
from streamcli.families import create_recognizer
from streamcli.families.zipformer import v1_state_specs, v2_state_specs
from streamcli.recognizer import RecognizerConfig
from streamcli.search import BeamState

REPO = Path(__file__).resolve().parent.parent

from streamcli_tools.devtools.sherpa_parity import dev_files, load_16k  # noqa: E402

KINDS = ["len", "avg", "key", "val", "val2", "conv1", "conv2"]
NEEDS_DEV = pytest.mark.skipif(
    not (SHARED / "data" / "dev" / "dev.tsv").is_file(), reason="needs ../shared dev data"
)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_encoder_interface_is_the_20m_zipformer_v1(test_zipformer_dir):
    model = onnx.load(str(test_zipformer_dir / "encoder.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["model_type"] == "zipformer"
    assert meta["version"] == "1"
    assert meta["decode_chunk_len"] == "32" and meta["T"] == "39"
    assert meta["num_encoder_layers"] == "2,2,2,2,2"
    assert meta["encoder_dims"] == "256,256,256,256,256"
    assert meta["attention_dims"] == "192,192,192,192,192"
    assert meta["cnn_module_kernels"] == "31,31,31,31,31"
    assert meta["left_context_len"] == "64,32,16,8,32"
    inputs = model.graph.input
    assert [i.name for i in inputs] == ["x"] + [f"cached_{k}_{i}" for k in KINDS for i in range(5)]
    assert _dims(inputs[0]) == ["N", 39, 80]
    by_name = {i.name: i for i in inputs}
    assert _dims(by_name["cached_len_0"]) == [2, "N"]
    assert by_name["cached_len_0"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert _dims(by_name["cached_avg_1"]) == [2, "N", 256]
    assert _dims(by_name["cached_key_0"]) == [2, 64, "N", 192]
    assert _dims(by_name["cached_val_3"]) == [2, 8, "N", 96]
    assert _dims(by_name["cached_val2_4"]) == [2, 32, "N", 96]
    assert _dims(by_name["cached_conv1_2"]) == [2, "N", 256, 30]
    outputs = model.graph.output
    assert [o.name for o in outputs] == ["encoder_out"] + [
        f"new_cached_{k}_{i}" for k in KINDS for i in range(5)
    ]
    assert _dims(outputs[0]) == ["N", 8, 512]


def test_decoder_joiner_interface_and_tokens(test_zipformer_dir):
    dec = onnx.load(str(test_zipformer_dir / "decoder.onnx"))
    assert {p.key: p.value for p in dec.metadata_props} == {"context_size": "2", "vocab_size": "500"}
    assert [i.name for i in dec.graph.input] == ["y"] and _dims(dec.graph.input[0]) == ["N", 2]
    assert dec.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in dec.graph.output] == ["decoder_out"]
    join = onnx.load(str(test_zipformer_dir / "joiner.onnx"))
    assert [i.name for i in join.graph.input] == ["encoder_out", "decoder_out"]
    assert [o.name for o in join.graph.output] == ["logit"] and _dims(join.graph.output[0]) == ["N", 500]
    shipped = sorted((SHARED / "models").glob("*/tokens.txt"))
    if shipped:
        assert (test_zipformer_dir / "tokens.txt").read_bytes() == shipped[0].read_bytes()
    params = sum(
        int(np.prod(t.dims)) for t in onnx.load(str(test_zipformer_dir / "encoder.onnx")).graph.initializer
    )
    assert 2_000_000 < params < 20_000_000  # realistic compute, still fast on 2 cores


@pytest.fixture(scope="module")
def rec(test_zipformer_dir):
    return create_recognizer(
        RecognizerConfig(
            model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False)
        )
    )


def _speech_features(n_chunks: int) -> list[np.ndarray]:
    from streamcli.features import compute_features

    wavs = sorted((SHARED / "models").glob("*/test_wavs/0.wav"))
    if wavs:
        feats = compute_features(load_16k(wavs[0]), "kaldi_fbank")
    else:  # noise stands in for speech when the shared data is absent
        noise = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
        feats = compute_features(noise, "kaldi_fbank")
    return [feats[None, 32 * i : 32 * i + 39] for i in range(n_chunks)]


def test_model_info(rec):
    info = rec.info
    assert info.family == "zipformer-transducer"
    assert (info.chunk_frames, info.shift_frames, info.subsampling) == (39, 32, 4)
    assert info.provider == "CPUExecutionProvider" and info.threads == 1
    assert info.state_bytes == sum(s.zeros().nbytes for s in rec.state_specs)
    assert len(rec.state_specs) == 35


def test_every_state_input_changes_the_encoder_output(rec):
    chunks = _speech_features(5)
    states = rec.initial_states()
    for x in chunks[:4]:  # fill the caches with real history first
        _, states = rec.run_encoder(x, states)
    x = chunks[4]
    ref_out, ref_new = rec.run_encoder(x, states)
    rng = np.random.default_rng(0)
    for k, spec in enumerate(rec.state_specs):
        perturbed = list(states)
        if states[k].dtype == np.int64:
            perturbed[k] = states[k] + 3
        else:
            perturbed[k] = states[k] + rng.standard_normal(states[k].shape).astype(np.float32)
        out, _ = rec.run_encoder(x, perturbed)
        assert np.abs(out - ref_out).max() > 1e-4, f"{spec.name} does not influence encoder_out"
    # and every float state the encoder returns depends on the input
    _, new2 = rec.run_encoder(x + 1.0, states)
    for spec, old, a, b in zip(rec.state_specs, states, ref_new, new2, strict=False):
        assert a.shape == spec.shape
        if a.dtype != np.int64:
            assert np.abs(a - b).max() > 1e-5, f"new {spec.name} does not depend on x"
        else:  # cached_len counts the frames seen: it grows by this chunk's frames
            assert (a > old).all() and (a == b).all()


def _decode(rec, samples: np.ndarray) -> list[tuple[int, float]]:
    s = rec.create_stream()
    s.accept_waveform(16000, samples)
    s.finish()
    return [(t.id, t.start) for t in s.result().tokens]


@NEEDS_DEV
def test_batched_streams_equal_single_streams(rec):
    audio = [load_16k(p) for p in dev_files()[:3]]
    single = [_decode(rec, a) for a in audio]
    streams = [rec.create_stream() for _ in audio]
    for s, a in zip(streams, audio, strict=False):
        s.accept_waveform(16000, a)
        s.input_finished()
    while any(s.is_ready() for s in streams):
        rec.decode_streams(streams)
    assert [[(t.id, t.start) for t in s.result().tokens] for s in streams] == single
    assert all(single)


@NEEDS_DEV
def test_beam_1_equals_greedy_and_beam_4_scores(test_zipformer_dir, rec):
    audio = [load_16k(p) for p in dev_files()[:3]]
    cfg = dict(model=str(test_zipformer_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False))
    beam1 = create_recognizer(RecognizerConfig(decoding="beam", beam=1, **cfg))
    beam4 = create_recognizer(RecognizerConfig(decoding="beam", beam=4, **cfg))
    for a in audio:
        assert _decode(beam1, a) == _decode(rec, a)
        s = beam4.create_stream()
        s.accept_waveform(16000, a)
        s.finish()
        st: BeamState = s._state.search
        assert 1 <= len(st.hyps) <= 4
        assert len({h.ys for h in st.hyps.values()}) == len(st.hyps)  # merged: distinct sequences
        assert all(h.log_prob <= 0 for h in st.hyps.values())
        best = st.best()
        assert best.log_prob / len(best.ys) == max(h.log_prob / len(h.ys) for h in st.hyps.values())
        assert [t.id for t in s.result().tokens] == list(best.ys[2:])
        frames = list(best.frames)
        assert frames == sorted(frames) and len(frames) == len(best.ys) - 2


def test_v2_state_layout_from_metadata(tmp_path):
    meta = {
        "num_encoder_layers": "2,2",
        "encoder_dims": "192,256",
        "query_head_dims": "32,32",
        "value_head_dims": "12,12",
        "num_heads": "4,8",
        "cnn_module_kernels": "31,15",
        "left_context_len": "128,64",
    }
    specs = v2_state_specs(meta, tmp_path)
    assert len(specs) == 4 * 6 + 2
    assert specs[0].name == "cached_key_0" and specs[0].shape == (128, 1, 128) and specs[0].batch_axis == 1
    assert specs[1].shape == (1, 1, 128, 144)
    assert specs[2].shape == (128, 1, 48)
    assert specs[4].shape == (1, 192, 15) and specs[4].batch_axis == 0
    assert specs[2 * 6].shape == (64, 1, 256)
    assert specs[3 * 6 + 4].shape == (1, 256, 7)
    assert specs[-2].shape == (1, 128, 3, 19)
    assert specs[-1].dtype == np.int64 and specs[-1].shape == (1,)
    with pytest.raises(ModelError, match="query_head_dims"):
        v2_state_specs({k: v for k, v in meta.items() if k != "query_head_dims"}, tmp_path)


def test_v1_state_layout_errors(tmp_path):
    meta = {
        "num_encoder_layers": "2,2",
        "encoder_dims": "256",
        "attention_dims": "192,192",
        "cnn_module_kernels": "31,31",
        "left_context_len": "64,32",
    }
    with pytest.raises(ModelError, match="different lengths"):
        v1_state_specs(meta, tmp_path)
    with pytest.raises(ModelError, match="not a list of integers"):
        v1_state_specs({**meta, "encoder_dims": "a,b"}, tmp_path)


def test_zipformer_rejects_window_options(test_zipformer_dir):
    with pytest.raises(ValueError, match="wctc"):
        create_recognizer(RecognizerConfig(model=str(test_zipformer_dir), device="cpu", window_frames=200))


def test_decoder_memo_matches_the_session(rec):
    y = np.array([[-1, 0], [5, 7], [5, 7], [499, 3]], np.int64)
    direct = rec.decoder.run(None, {"y": y})[0]
    np.testing.assert_array_equal(rec.run_decoder(y), direct)
    np.testing.assert_array_equal(rec.run_decoder(y[::-1].copy()), direct[::-1])  # now from the memo
    assert (-1, 0) in rec._dec_cache
    # -1 (no token yet) embeds to zeros: [-1, 0] differs from [0, 0]
    assert np.abs(rec.run_decoder(np.array([[0, 0]], np.int64))[0] - direct[0]).max() > 1e-4


@NEEDS_DEV
def test_batched_beam_search_equals_single(test_zipformer_dir):
    beam = create_recognizer(
        RecognizerConfig(
            model=str(test_zipformer_dir),
            device="cpu",
            threads=1,
            decoding="beam",
            beam=3,
            endpoint=EndpointConfig(enabled=False),
        )
    )
    audio = [load_16k(p) for p in dev_files()[3:6]]
    single = [_decode(beam, a) for a in audio]
    streams = [beam.create_stream() for _ in audio]
    for s, a in zip(streams, audio, strict=True):
        s.accept_waveform(16000, a)
        s.input_finished()
    while any(s.is_ready() for s in streams):
        beam.decode_streams(streams)
    assert [[(t.id, t.start) for t in s.result().tokens] for s in streams] == single
    assert all(single)


def test_test_model_is_reproducible(test_zipformer_dir, tmp_path):

    from streamcli_tools.devtools import zipformer_maker as maker

    maker.make_test_zipformer(tmp_path / "again", seed=0)
    maker.make_test_zipformer(tmp_path / "other", seed=1)
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
        assert (tmp_path / "again" / name).read_bytes() == (test_zipformer_dir / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (test_zipformer_dir / name).read_bytes()
