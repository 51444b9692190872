#!/usr/bin/env python3
"""Writes a random-weight streaming zipformer transducer with sherpa-onnx's version-1 interface.

    python scripts/make_test_zipformer.py OUT_DIR [--seed 0]

OUT_DIR gets encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt (the BPE-500 table shipped in
../shared/models). The files have exactly the ONNX interface of icefall's 20M streaming zipformer as
sherpa-onnx loads it (names, dtypes, shapes, metadata), so any runtime that decodes the real model
decodes this one the same way; only the weights are random (fixed by the seed) and the layers are a
compact stand-in with real compute:

- encoder: x (N, 39, 80) + 35 cached states -> encoder_out (N, 8, 512) + 35 new states. A strided
  conv front end (11 frames, stride 4) feeds 5 stacks of 2 layers at downsampling 1,2,4,8,2. Each
  layer uses all seven of its states: cached_len (masks the not-yet-filled part of the cache and
  weights the running mean), cached_avg (running mean of the layer input), cached_key/val/val2
  (left context of two attention heads sharing one attention map), cached_conv1/conv2 (left
  context of two depthwise convolutions). Each new state is a function of the input.
- decoder: y (N, 2) int64 -> decoder_out (N, 512); ids < 0 (sherpa-onnx's initial context) embed to 0.
- joiner: encoder_out (N, 512), decoder_out (N, 512) -> logit (N, 500). One encoder dimension
  carries the log-mel energy (0-2 kHz) of each frame and lowers the blank score on speech, so silence decodes
  to blanks and speech to tokens (4-18 per second on the dev set).

Only onnx + numpy are needed (no torch), so the test suite can build it in a tmp dir.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10 (sherpa-onnx bundles its own build)
NUM_ENCODER_LAYERS = [2, 2, 2, 2, 2]
ENCODER_DIMS = [256, 256, 256, 256, 256]
ATTENTION_DIMS = [192, 192, 192, 192, 192]
CNN_MODULE_KERNELS = [31, 31, 31, 31, 31]
LEFT_CONTEXT_LEN = [64, 32, 16, 8, 32]
DOWNSAMPLING = [1, 2, 4, 8, 2]
FEEDFORWARD_DIM = 512
DECODE_CHUNK_LEN = 32
T_FRAMES = 39  # decode_chunk_len + 7 frames of right context, as in the 20M model
FEATURE_DIM = 80
OUT_FRAMES = 8  # encoder frames per chunk (subsampling 4)
JOINER_DIM = 512
DECODER_DIM = 512
CONTEXT_SIZE = 2
VOCAB_SIZE = 500
# Feature normalisation constants (log-mel of speech is around -5, of silence below -9).
FEAT_MEAN = -7.0
FEAT_SCALE = 0.25
ENERGY_BINS = 40
ENERGY_THRESHOLD = -8.5  # mean log-mel of the lower 40 bins above this counts as speech
ENERGY_GAIN = 2.0
DECODER_GAIN = 0.5  # the label context shifts the joiner input less than the acoustics
BLANK_SPEECH_DROP = 6.0  # how much speech lowers the blank logit
BLANK_BIAS = 10.65  # tuned on dev speech: 4-18 tokens per second over whole files, none on silence

STATE_KINDS = ["len", "avg", "key", "val", "val2", "conv1", "conv2"]

DEFAULT_TOKENS = Path(__file__).resolve().parents[4] / "shared" / "models"


class Graph:
    """Tiny ONNX graph builder: unique names, initializers from numpy, one-line op helpers."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value: np.ndarray | float | int | list, prefix: str = "c") -> str:
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(arr, n))
        return n

    def weight(self, shape: tuple[int, ...], fan_in: int, gain: float = 1.0, prefix: str = "w") -> str:
        w = self.rng.standard_normal(shape).astype(np.float32) * (gain / np.sqrt(fan_in))
        return self.const(w, prefix)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def out(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    # composite helpers
    def linear(self, x: str, d_in: int, d_out: int, gain: float = 1.0, bias: bool = True) -> str:
        y = self.op("MatMul", [x, self.weight((d_in, d_out), d_in, gain)])
        if bias:
            y = self.op("Add", [y, self.const(self.rng.standard_normal(d_out).astype(np.float32) * 0.1)])
        return y

    def norm(self, x: str, dim: int) -> str:
        """RMS norm over the last axis (BasicNorm-like) keeps random activations O(1)."""
        ms = self.op("ReduceMean", [self.op("Mul", [x, x])], axes=[-1], keepdims=1)
        inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [ms, self.const(np.float32(1e-4))])])])
        return self.op("Mul", [self.op("Mul", [x, inv]), self.const(np.ones(dim, np.float32))])

    def gather0(self, x: str, index: int) -> str:
        return self.op("Gather", [x, self.const(np.array(index, np.int64))], axis=0)

    def stack0(self, xs: list[str]) -> str:
        ax = self.const(np.array([0], np.int64))
        return self.op("Concat", [self.op("Unsqueeze", [x, ax]) for x in xs], axis=0)

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        return self.op(
            "Slice",
            [
                x,
                self.const(np.array([start], np.int64)),
                self.const(np.array([end], np.int64)),
                self.const(np.array([axis], np.int64)),
            ],
        )


def _layer(
    g: Graph, h: str, t: int, dim: int, att: int, kernel: int, left: int, st: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """One streaming layer on h (N, t, dim); ``st`` holds this layer's 7 states (batch dims inside)."""
    new: dict[str, str] = {}
    # cached_len (N,) int64 and cached_avg (N, dim): running mean of the layer input.
    lenf = g.op("Cast", [st["len"]], to=TensorProto.FLOAT)  # (N,)
    lenf3 = g.op("Unsqueeze", [lenf, g.const(np.array([1], np.int64))])  # (N,1)
    hsum = g.op("ReduceSum", [h, g.const(np.array([1], np.int64))], keepdims=0)  # (N, dim)
    num = g.op("Add", [g.op("Mul", [st["avg"], lenf3]), hsum])
    den = g.op("Add", [lenf3, g.const(np.float32(t))])
    new_avg = g.op("Div", [num, den])
    new["avg"] = new_avg
    new["len"] = g.op("Add", [st["len"], g.const(np.int64(t))])
    avg_term = g.op(
        "Mul",
        [
            g.op("Unsqueeze", [new_avg, g.const(np.array([1], np.int64))]),
            g.const(g.rng.standard_normal(dim).astype(np.float32) * 0.5),
        ],
    )
    h = g.op("Add", [h, avg_term])

    # Attention with cached keys/values (left context) and a mask over the unfilled part of the cache.
    q, k, v, v2 = g.op(
        "Split",
        [g.linear(h, dim, 3 * att), g.const(np.array([att, att, att // 2, att // 2], np.int64))],
        n_out=4,
        axis=-1,
    )
    perm = [1, 0, 2]
    keys = g.op("Concat", [g.op("Transpose", [st["key"]], perm=perm), k], axis=1)  # (N, left+t, att)
    vals = g.op("Concat", [g.op("Transpose", [st["val"]], perm=perm), v], axis=1)
    vals2 = g.op("Concat", [g.op("Transpose", [st["val2"]], perm=perm), v2], axis=1)
    new["key"] = g.op("Transpose", [g.slice(keys, 1, t, left + t)], perm=perm)
    new["val"] = g.op("Transpose", [g.slice(vals, 1, t, left + t)], perm=perm)
    new["val2"] = g.op("Transpose", [g.slice(vals2, 1, t, left + t)], perm=perm)
    scores = g.op("MatMul", [q, g.op("Transpose", [keys], perm=[0, 2, 1])])  # (N, t, left+t)
    scores = g.op("Mul", [scores, g.const(np.float32(1.0 / np.sqrt(att)))])
    # Key position p of the cache is valid when p >= left - min(cached_len, left).
    filled = g.op("Min", [lenf, g.const(np.float32(left))])
    first_valid = g.op("Sub", [g.const(np.float32(left)), filled])  # (N,)
    first_valid = g.op("Reshape", [first_valid, g.const(np.array([-1, 1, 1], np.int64))])
    pos = g.const(np.arange(left + t, dtype=np.float32).reshape(1, 1, -1))
    invalid = g.op("Cast", [g.op("Less", [pos, first_valid])], to=TensorProto.FLOAT)
    scores = g.op("Add", [scores, g.op("Mul", [invalid, g.const(np.float32(-1e4))])])
    probs = g.op("Softmax", [scores], axis=-1)
    a1 = g.op("MatMul", [probs, vals])
    a2 = g.op("MatMul", [probs, vals2])
    h = g.op("Add", [h, g.linear(g.op("Concat", [a1, a2], axis=-1), att, dim)])
    h = g.norm(h, dim)

    def conv_module(h: str, cache: str) -> tuple[str, str]:
        c = g.op("Transpose", [g.linear(h, dim, dim)], perm=[0, 2, 1])  # (N, dim, t)
        full = g.op("Concat", [cache, c], axis=2)  # (N, dim, kernel-1+t)
        new_cache = g.slice(full, 2, t, kernel - 1 + t)
        # A causal temporal filter of `kernel` taps shared by all channels, written as one MatMul
        # with a banded (kernel-1+t, t) matrix: output frame j sees frames j .. j+kernel-1 of `full`.
        taps = g.rng.standard_normal(kernel).astype(np.float32) / np.sqrt(kernel)
        band = np.zeros((kernel - 1 + t, t), np.float32)
        for j in range(t):
            band[j : j + kernel, j] = taps
        y = g.op("MatMul", [full, g.const(band)])  # (N, dim, t)
        y = g.op("Tanh", [g.op("Transpose", [y], perm=[0, 2, 1])])
        return g.op("Add", [h, g.linear(y, dim, dim, gain=0.5)]), new_cache

    h, new["conv1"] = conv_module(h, st["conv1"])
    ff = g.op("Relu", [g.linear(h, dim, FEEDFORWARD_DIM)])
    h = g.op("Add", [h, g.linear(ff, FEEDFORWARD_DIM, dim, gain=0.7)])
    h, new["conv2"] = conv_module(h, st["conv2"])
    return g.norm(h, dim), new


def build_encoder(rng: np.random.Generator) -> onnx.ModelProto:
    g = Graph(rng)
    num_stacks = len(NUM_ENCODER_LAYERS)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T_FRAMES, FEATURE_DIM])]
    state_shapes: dict[str, list] = {}
    for kind in STATE_KINDS:
        for i in range(num_stacks):
            layers, dim, att = NUM_ENCODER_LAYERS[i], ENCODER_DIMS[i], ATTENTION_DIMS[i]
            left, kern = LEFT_CONTEXT_LEN[i], CNN_MODULE_KERNELS[i]
            shape = {
                "len": [layers, "N"],
                "avg": [layers, "N", dim],
                "key": [layers, left, "N", att],
                "val": [layers, left, "N", att // 2],
                "val2": [layers, left, "N", att // 2],
                "conv1": [layers, "N", dim, kern - 1],
                "conv2": [layers, "N", dim, kern - 1],
            }[kind]
            state_shapes[f"{kind}_{i}"] = shape
            dtype = TensorProto.INT64 if kind == "len" else TensorProto.FLOAT
            inputs.append(helper.make_tensor_value_info(f"cached_{kind}_{i}", dtype, shape))

    # Front end: normalise, strided conv over 11 frames with stride 4 -> 8 frames at 40 ms.
    x = g.op("Mul", [g.op("Sub", ["x", g.const(np.float32(FEAT_MEAN))]), g.const(np.float32(FEAT_SCALE))])
    xt = g.op("Transpose", [x], perm=[0, 2, 1])  # (N, 80, 39)
    dim0 = ENCODER_DIMS[0]
    w_front = g.weight((dim0, FEATURE_DIM, 11), FEATURE_DIM * 11, 1.5)
    h = g.op("Conv", [xt, w_front, g.const(np.zeros(dim0, np.float32))], kernel_shape=[11], strides=[4])
    h = g.op("Relu", [g.op("Transpose", [h], perm=[0, 2, 1])])  # (N, 8, dim)
    h = g.norm(g.linear(h, dim0, dim0), dim0)

    new_states: dict[str, str] = {}
    for i in range(num_stacks):
        ds, dim = DOWNSAMPLING[i], ENCODER_DIMS[i]
        t = OUT_FRAMES // ds
        hs = h
        if ds > 1:  # average groups of ds frames
            hs = g.op("Reshape", [hs, g.const(np.array([0, t, ds, dim], np.int64))])
            hs = g.op("ReduceMean", [hs], axes=[2], keepdims=0)
        per_layer: dict[str, list[str]] = {k: [] for k in STATE_KINDS}
        for layer in range(NUM_ENCODER_LAYERS[i]):
            st = {}
            for kind in STATE_KINDS:
                s = g.gather0(f"cached_{kind}_{i}", layer)
                # batch-first views of the (..., N, ...) layouts
                st[kind] = s
            hs, new = _layer(g, hs, t, dim, ATTENTION_DIMS[i], CNN_MODULE_KERNELS[i], LEFT_CONTEXT_LEN[i], st)
            for kind in STATE_KINDS:
                per_layer[kind].append(new[kind])
        for kind in STATE_KINDS:
            new_states[f"{kind}_{i}"] = g.stack0(per_layer[kind])
        if ds > 1:  # repeat each frame ds times back to 8 frames
            up = g.op("Unsqueeze", [hs, g.const(np.array([2], np.int64))])
            up = g.op("Expand", [up, g.const(np.array([1, 1, ds, 1], np.int64))])
            hs = g.op("Reshape", [up, g.const(np.array([0, OUT_FRAMES, dim], np.int64))])
        h = g.norm(g.op("Add", [h, hs]), dim)

    # Output: projection to joiner_dim - 1 plus one energy dimension (mean log-mel of each output
    # frame's 11-frame window, minus a threshold) so speech and silence decode differently.
    proj = g.linear(h, ENCODER_DIMS[-1], JOINER_DIM - 1, gain=1.0)
    # energy of the lower half of the mel bins (0-2 kHz), so 8 kHz recordings count as speech too
    e = g.op("ReduceMean", [g.slice("x", 2, 0, ENERGY_BINS)], axes=[2], keepdims=1)  # (N, 39, 1)
    e = g.op("Transpose", [e], perm=[0, 2, 1])  # (N, 1, 39)
    e = g.op("Conv", [e, g.const(np.full((1, 1, 11), 1.0 / 11, np.float32))], kernel_shape=[11], strides=[4])
    e = g.op("Transpose", [e], perm=[0, 2, 1])  # (N, 8, 1)
    e = g.op(
        "Mul", [g.op("Sub", [e, g.const(np.float32(ENERGY_THRESHOLD))]), g.const(np.float32(ENERGY_GAIN))]
    )
    g.out("Concat", [e, proj], "encoder_out", axis=-1)

    outputs = [helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", OUT_FRAMES, JOINER_DIM])]
    for kind in STATE_KINDS:
        for i in range(num_stacks):
            name = f"new_cached_{kind}_{i}"
            src = new_states[f"{kind}_{i}"]
            if kind == "key" or kind.startswith("val"):
                # per-layer tensors are (left, N, d); stacked -> (layers, left, N, d) already
                pass
            g.out("Identity", [src], name)
            dtype = TensorProto.INT64 if kind == "len" else TensorProto.FLOAT
            outputs.append(helper.make_tensor_value_info(name, dtype, state_shapes[f"{kind}_{i}"]))

    graph = helper.make_graph(g.nodes, "encoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    meta = {
        "model_type": "zipformer",
        "version": "1",
        "model_author": "streamcli-test",
        "decode_chunk_len": str(DECODE_CHUNK_LEN),
        "T": str(T_FRAMES),
        "num_encoder_layers": ",".join(map(str, NUM_ENCODER_LAYERS)),
        "encoder_dims": ",".join(map(str, ENCODER_DIMS)),
        "attention_dims": ",".join(map(str, ATTENTION_DIMS)),
        "cnn_module_kernels": ",".join(map(str, CNN_MODULE_KERNELS)),
        "left_context_len": ",".join(map(str, LEFT_CONTEXT_LEN)),
        "comment": "random-weight test model with the interface of the icefall 20M streaming zipformer",
    }
    helper.set_model_props(model, meta)
    return model


def build_decoder(rng: np.random.Generator) -> onnx.ModelProto:
    g = Graph(rng)
    emb = g.const(rng.standard_normal((VOCAB_SIZE, DECODER_DIM)).astype(np.float32))
    y = "y"
    valid = g.op("Cast", [g.op("GreaterOrEqual", [y, g.const(np.int64(0))])], to=TensorProto.FLOAT)
    ids = g.op("Max", [y, g.const(np.int64(0))])
    e = g.op("Gather", [emb, ids], axis=0)  # (N, 2, D)
    e = g.op("Mul", [e, g.op("Unsqueeze", [valid, g.const(np.array([2], np.int64))])])
    flat = g.op("Reshape", [e, g.const(np.array([0, CONTEXT_SIZE * DECODER_DIM], np.int64))])
    hid = g.op("Relu", [g.linear(flat, CONTEXT_SIZE * DECODER_DIM, DECODER_DIM)])
    w = rng.standard_normal((DECODER_DIM, JOINER_DIM)).astype(np.float32) * (
        DECODER_GAIN / np.sqrt(DECODER_DIM)
    )
    w[:, 0] = 0.0  # the energy dimension of the joiner input is left to the encoder
    g.out("MatMul", [hid, g.const(w)], "decoder_out")
    graph = helper.make_graph(
        g.nodes,
        "decoder",
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", CONTEXT_SIZE])],
        [helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", JOINER_DIM])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    helper.set_model_props(model, {"context_size": str(CONTEXT_SIZE), "vocab_size": str(VOCAB_SIZE)})
    return model


def build_joiner(rng: np.random.Generator) -> onnx.ModelProto:
    g = Graph(rng)
    hid = g.op("Tanh", [g.op("Add", ["encoder_out", "decoder_out"])])
    w = rng.standard_normal((JOINER_DIM, VOCAB_SIZE)).astype(np.float32) * (2.0 / np.sqrt(JOINER_DIM))
    w[0, :] = 0.0
    w[0, 0] = -BLANK_SPEECH_DROP  # speech (energy dim -> +1) lowers blank, silence raises it
    b = np.zeros(VOCAB_SIZE, np.float32)
    b[0] = BLANK_BIAS
    g.out("Add", [g.op("MatMul", [hid, g.const(w)]), g.const(b)], "logit")
    graph = helper.make_graph(
        g.nodes,
        "joiner",
        [
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", JOINER_DIM]),
            helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", JOINER_DIM]),
        ],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", VOCAB_SIZE])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    helper.set_model_props(model, {"joiner_dim": str(JOINER_DIM)})
    return model


def find_tokens(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    for cand in sorted(DEFAULT_TOKENS.glob("*/tokens.txt")):
        return cand
    raise FileNotFoundError(f"no tokens.txt under {DEFAULT_TOKENS}; pass --tokens")


def make_test_zipformer(out_dir: Path, seed: int = 0, tokens: Path | None = None) -> Path:
    """Writes the four files into out_dir (created if needed) and returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, model in (
        ("encoder.onnx", build_encoder(rng)),
        ("decoder.onnx", build_decoder(rng)),
        ("joiner.onnx", build_joiner(rng)),
    ):
        onnx.checker.check_model(model)
        onnx.save(model, str(out_dir / name))
    shutil.copyfile(find_tokens(tokens), out_dir / "tokens.txt")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tokens", type=Path, default=None, help="tokens.txt to copy (default: ../shared/models/*/)"
    )
    args = ap.parse_args(argv)
    out = make_test_zipformer(args.out_dir, args.seed, args.tokens)
    print(f"wrote {out}/encoder.onnx decoder.onnx joiner.onnx tokens.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
