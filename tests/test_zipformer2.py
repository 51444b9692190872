"""zipformer2 interface: states laid out from metadata, batched along the right axes, same as sherpa-onnx.

A small synthetic encoder with the zipformer2 input/output layout (per-layer cached_key /
cached_nonlin_attn / cached_val1 / cached_val2 / cached_conv1 / cached_conv2, then embed_states and
processed_lens). Every state is reduced over all axes but its batch axis and added to the output, so
a wrong shape or batch axis fails in onnxruntime, and a state that is not carried changes the output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from streamcli.endpoint import EndpointConfig  # noqa: E402
from streamcli.families import create_recognizer  # noqa: E402
from streamcli.families.zipformer import v2_state_specs  # noqa: E402
from streamcli.recognizer import RecognizerConfig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
from streamcli_tools.devtools.sherpa_parity import compare  # noqa: E402

META = {
    "model_type": "zipformer2",
    "version": "1",
    "decode_chunk_len": "32",
    "T": "45",
    "num_encoder_layers": "1,2",
    "encoder_dims": "32,48",
    "query_head_dims": "8,8",
    "value_head_dims": "4,4",
    "num_heads": "2,2",
    "cnn_module_kernels": "7,5",
    "left_context_len": "16,8",
}


def _build_encoder(path: Path) -> None:
    rng = np.random.default_rng(3)
    specs = v2_state_specs(META, path)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 45, 80])]
    outputs = [helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", 8, 512])]
    const("w", (rng.standard_normal((320, 512)) * 0.05).astype(np.float32))
    const("shape", np.array([0, 8, 320], np.int64))
    nodes += [
        helper.make_node(
            "Slice",
            [
                "x",
                const("s0", np.array([0], np.int64)),
                const("s1", np.array([32], np.int64)),
                const("s2", np.array([1], np.int64)),
            ],
            ["x32"],
        ),
        helper.make_node("Reshape", ["x32", "shape"], ["xr"]),
        helper.make_node("MatMul", ["xr", "w"], ["h0"]),
        helper.make_node("ReduceMean", ["x"], ["xmean"], axes=[1, 2], keepdims=0),  # (N,)
    ]
    acc = "h0"
    for k, spec in enumerate(specs):
        dims = [("N" if a == spec.batch_axis else d) for a, d in enumerate(spec.shape)]
        elem = TensorProto.INT64 if spec.dtype == np.int64 else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(spec.name, elem, dims))
        outputs.append(helper.make_tensor_value_info(f"new_{spec.name}", elem, dims))
        src = spec.name
        if elem == TensorProto.INT64:
            nodes.append(helper.make_node("Cast", [src], [f"f{k}"], to=TensorProto.FLOAT))
            src = f"f{k}"
            nodes.append(
                helper.make_node(
                    "Add", [spec.name, const(f"one{k}", np.array(32, np.int64))], [f"new_{spec.name}"]
                )
            )
        else:
            bshape = [1] * len(spec.shape)
            bshape[spec.batch_axis] = -1
            nodes += [
                helper.make_node(
                    "Reshape", ["xmean", const(f"bs{k}", np.array(bshape, np.int64))], [f"xb{k}"]
                ),
                helper.make_node("Mul", [spec.name, const(f"decay{k}", np.float32(0.5))], [f"d{k}"]),
                helper.make_node("Add", [f"d{k}", f"xb{k}"], [f"new_{spec.name}"]),
            ]
        other = [a for a in range(len(spec.shape)) if a != spec.batch_axis]
        red = f"r{k}"
        if other:
            nodes.append(helper.make_node("ReduceMean", [src], [red], axes=other, keepdims=0))
        else:
            nodes.append(helper.make_node("Identity", [src], [red]))
        scale = np.float32(0.01 if elem == TensorProto.INT64 else 1.0)
        nodes += [
            helper.make_node("Reshape", [red, const(f"rs{k}", np.array([-1, 1, 1], np.int64))], [f"r3{k}"]),
            helper.make_node(
                "Mul",
                [f"r3{k}", const(f"g{k}", (rng.standard_normal(512) * scale).astype(np.float32))],
                [f"c{k}"],
            ),
            helper.make_node("Add", [acc, f"c{k}"], [f"acc{k}"]),
        ]
        acc = f"acc{k}"
    nodes.append(helper.make_node("Identity", [acc], ["encoder_out"]))
    graph = helper.make_graph(nodes, "zipformer2_test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, META)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def z2_dir(test_zipformer_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zipformer2")
    _build_encoder(folder / "encoder.onnx")
    for name in ("decoder.onnx", "joiner.onnx", "tokens.txt"):
        shutil.copy(test_zipformer_dir / name, folder / name)
    return folder


def _decode_all(rec, audio: list[np.ndarray], batched: bool) -> list[list[tuple[int, float]]]:
    streams = [rec.create_stream() for _ in audio]
    for s, a in zip(streams, audio, strict=True):
        s.accept_waveform(16000, a)
        s.input_finished()
    if batched:
        while any(s.is_ready() for s in streams):
            rec.decode_streams(streams)
    else:
        for s in streams:
            s.decode_ready()
    return [[(t.id, t.start) for t in s.result().tokens] for s in streams]


def test_zipformer2_states_and_batching(z2_dir):
    rec = create_recognizer(
        RecognizerConfig(model=str(z2_dir), device="cpu", threads=1, endpoint=EndpointConfig(enabled=False))
    )
    assert rec.info.chunk_frames == 45 and rec.info.shift_frames == 32
    assert len(rec.state_specs) == 3 * 6 + 2
    assert rec.state_specs[-2].shape == (1, 128, 3, 19)
    rng = np.random.default_rng(0)
    audio = [(rng.standard_normal(16000 * n) * 0.1).astype(np.float32) for n in (3, 5, 4)]
    single = _decode_all(rec, audio, batched=False)
    assert _decode_all(rec, audio, batched=True) == single
    assert all(single)  # every stream decoded tokens, so the comparison is not vacuous
    # states are carried: the second chunk's output depends on the first chunk's states
    x = rng.standard_normal((1, 45, 80)).astype(np.float32)
    out0, new = rec.run_encoder(x, rec.initial_states())
    out1, _ = rec.run_encoder(x, new)
    assert np.abs(out1 - out0).max() > 1e-3
    assert int(new[-1][0]) == 32  # processed_lens advanced


@pytest.mark.skipif(not (SHARED / "data" / "dev" / "dev.tsv").is_file(), reason="needs ../shared dev data")
def test_zipformer2_parity_with_sherpa(z2_dir):
    pytest.importorskip("sherpa_onnx")
    from streamcli_tools.devtools.sherpa_parity import dev_files

    report = compare(z2_dir, dev_files()[:4], threads=1)
    assert report["identical_files"] == report["files"]
    assert report["tokens"] > 20  # not vacuous: the synthetic encoder makes the joiner emit
