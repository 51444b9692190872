"""Whisper tiny.en's encoder and decoder written as ONNX graphs straight from the weights (no torch).

The second pass needs both at run time, and the runtime must not depend on torch, so the graphs are
built node by node with ``onnx.helper`` from the CTranslate2 variables (streamcli.whisper.weights).

``whisper-encoder.onnx``: ``mel`` (N, 80, T) normalised log-mel (Whisper's rule), T <= 3000 and even,
and ``mel_frames`` (N,) int64, each row's own even length (the rest of the row zeros) ->
``encoder_out`` (N, T/2, 384). Attention never looks at a row's padding, and with zero padding and even
lengths the two convolutions see exactly what they see unbatched, so every row's valid frames equal
its own unbatched run: segments of different lengths share one call.

``whisper-cross-kv.onnx``: ``encoder_out`` -> for every decoder layer i, the cross-attention
keys/values of those frames, computed once per segment and already split into heads:
``cross_key_i`` (N, H, 64, S) and ``cross_value_i`` (N, H, S, 64).

``whisper-decoder.onnx``: ``tokens`` (N, n) int64, the self-attention cache ``self_key`` /
``self_value`` (L, N, P, 384) of the P tokens so far (P = 0 at the start), the ``cross_key_i`` /
``cross_value_i``, ``cross_frames`` (N,) int64 (each row's valid encoder frames; cross-attention
ignores the rest), ``self_pad`` (N,) int64 (each row's leading padding slots) -> ``logits`` (N, vocab)
of the last new token and the grown caches ``new_self_key`` / ``new_self_value`` (L, N, P + n, 384).
New token j sits in slot P + j, at position P + j - self_pad, and sees the slots <= P + j that are not
padding: rows whose prompts differ in length go in together, left-padded to the same end. All rows
advance together (one token each per call); a row that ended is dropped by the caller.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from streamcli.whisper.weights import dims_of

OPSET = 17


class _Graph:
    """A tiny node builder: every op returns its output name(s)."""

    def __init__(self) -> None:
        from onnx import helper  # noqa: PLC0415 (only needed while converting)

        self.helper = helper
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float | int | list, hint: str = "c") -> str:
        from onnx import numpy_helper  # noqa: PLC0415

        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, out_names: list[str] | None = None, **attrs):  # noqa: ANN201
        names = out_names or [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    # ----- layers ---------------------------------------------------------------------------------
    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        y = self.op("MatMul", x, self.const(np.ascontiguousarray(np.asarray(weight, np.float32).T), "w"))
        return self.op("Add", y, self.const(np.asarray(bias, np.float32), "b")) if bias is not None else y

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.const(np.asarray(gamma, np.float32), "g"),
            self.const(np.asarray(beta, np.float32), "beta"),
            axis=-1,
            epsilon=1e-5,
        )

    def gelu(self, x: str) -> str:
        inner = self.op("Erf", self.op("Mul", x, self.const(np.float32(1.0 / math.sqrt(2.0)))))
        return self.op(
            "Mul",
            self.op("Mul", x, self.op("Add", inner, self.const(np.float32(1.0)))),
            self.const(np.float32(0.5)),
        )

    def heads(self, x: str, num_heads: int, head_dim: int) -> str:
        """(N, T, D) -> (N, H, T, hd)."""
        r = self.op("Reshape", x, self.const(np.array([0, 0, num_heads, head_dim], np.int64)))
        return self.op("Transpose", r, perm=[0, 2, 1, 3])

    def attention(self, q: str, k: str, v: str, num_heads: int, d_model: int, mask: str | None = None) -> str:
        hd = d_model // num_heads
        kh_t = self.op("Transpose", self.heads(k, num_heads, hd), perm=[0, 1, 3, 2])
        return self.attention_heads(q, kh_t, self.heads(v, num_heads, hd), num_heads, d_model, mask)

    def attention_heads(
        self, q: str, kh_t: str, vh: str, num_heads: int, d_model: int, mask: str | None = None
    ) -> str:
        """Attention with keys already as (N, H, hd, S) and values as (N, H, S, hd)."""
        hd = d_model // num_heads
        qh = self.heads(q, num_heads, hd)
        scores = self.op("MatMul", qh, kh_t)
        scores = self.op("Mul", scores, self.const(np.float32(1.0 / math.sqrt(hd))))
        if mask is not None:
            scores = self.op("Add", scores, mask)
        ctx = self.op("MatMul", self.op("Softmax", scores, axis=-1), vh)
        ctx = self.op("Transpose", ctx, perm=[0, 2, 1, 3])
        return self.op("Reshape", ctx, self.const(np.array([0, 0, d_model], np.int64)))

    def key_padding_mask(self, keys: str, valid: str, axis: int = 1) -> str:
        """(N, 1, 1, S) additive mask from ``valid`` (N,) int64: key positions >= valid -> -1e9.

        ``keys`` is any tensor whose ``axis`` has the S key positions. -1e9 (not -inf) keeps a row with
        no valid key finite; its softmax weights on padding underflow to exactly 0."""
        i64 = lambda v: self.const(np.array(v, np.int64))  # noqa: E731
        size = self.op(
            "Squeeze", self.op("Slice", self.op("Shape", keys), i64([axis]), i64([axis + 1])), i64([0])
        )
        positions = self.op("Unsqueeze", self.op("Range", i64(0), size, i64(1)), i64([0]))  # (1, S)
        padded = self.op("GreaterOrEqual", positions, self.op("Unsqueeze", valid, i64([1])))  # (N, S)
        mask = self.op("Where", padded, self.const(np.float32(-1e9)), self.const(np.float32(0.0)))
        return self.op("Unsqueeze", mask, i64([1, 2]))

    def model(self, inputs: list, outputs: list, metadata: dict[str, str]):  # noqa: ANN201
        from onnx import checker  # noqa: PLC0415

        graph = self.helper.make_graph(self.nodes, "whisper", inputs, outputs, self.initializers)
        m = self.helper.make_model(
            graph, opset_imports=[self.helper.make_opsetid("", OPSET)], producer_name="streamcli"
        )
        m.ir_version = 8
        for key, value in metadata.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
        checker.check_model(m)
        return m


def _f(w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(w[name], np.float32)


def _feed_forward(g: _Graph, w: dict[str, np.ndarray], p: str, x: str) -> str:
    """Pre-norm feed-forward with its residual, as every Whisper layer (encoder and decoder) has it."""
    hn = g.layer_norm(x, w[f"{p}/ffn/layer_norm/gamma"], w[f"{p}/ffn/layer_norm/beta"])
    ff = g.linear(
        g.gelu(g.linear(hn, w[f"{p}/ffn/linear_0/weight"], w[f"{p}/ffn/linear_0/bias"])),
        w[f"{p}/ffn/linear_1/weight"],
        w[f"{p}/ffn/linear_1/bias"],
    )
    return g.op("Add", x, ff)


def build_encoder(w: dict[str, np.ndarray]):  # noqa: ANN201 (an onnx.ModelProto)
    from onnx import TensorProto  # noqa: PLC0415

    dims = dims_of(w)
    g = _Graph()
    h = g.helper
    d, heads = dims.d_model, dims.num_heads
    x = g.op(
        "Conv",
        "mel",
        g.const(_f(w, "encoder/conv1/weight")),
        g.const(_f(w, "encoder/conv1/bias")),
        kernel_shape=[3],
        pads=[1, 1],
    )
    x = g.gelu(x)
    x = g.op(
        "Conv",
        x,
        g.const(_f(w, "encoder/conv2/weight")),
        g.const(_f(w, "encoder/conv2/bias")),
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    x = g.op("Transpose", g.gelu(x), perm=[0, 2, 1])
    frames = g.op(
        "Slice", g.op("Shape", x), g.const(np.array([1], np.int64)), g.const(np.array([2], np.int64))
    )
    pe = g.op(
        "Slice",
        g.const(_f(w, "encoder/position_encodings/encodings")),
        g.const(np.array([0], np.int64)),
        frames,
        g.const(np.array([0], np.int64)),
    )
    x = g.op("Add", x, pe)
    # Encoder frame i comes from mel frames 2i-1 .. 2i+1: a row's valid frames are mel_frames / 2.
    mask = g.key_padding_mask(x, g.op("Div", "mel_frames", g.const(np.array(2, np.int64))))
    for i in range(dims.encoder_layers):
        p = f"encoder/layer_{i}"
        hn = g.layer_norm(
            x, w[f"{p}/self_attention/layer_norm/gamma"], w[f"{p}/self_attention/layer_norm/beta"]
        )
        q, k, v = g.op(
            "Split",
            g.linear(hn, w[f"{p}/self_attention/linear_0/weight"], w[f"{p}/self_attention/linear_0/bias"]),
            g.const(np.array([d, d, d], np.int64)),
            axis=-1,
            outputs=3,
        )
        att = g.attention(q, k, v, heads, d, mask)
        x = g.op(
            "Add",
            x,
            g.linear(att, w[f"{p}/self_attention/linear_1/weight"], w[f"{p}/self_attention/linear_1/bias"]),
        )
        x = _feed_forward(g, w, p, x)
    enc = g.layer_norm(x, w["encoder/layer_norm/gamma"], w["encoder/layer_norm/beta"])
    g.op("Identity", enc, out_names=["encoder_out"])
    f = TensorProto.FLOAT
    return g.model(
        [
            h.make_tensor_value_info("mel", f, ["N", 80, "T"]),
            h.make_tensor_value_info("mel_frames", TensorProto.INT64, ["N"]),
        ],
        [h.make_tensor_value_info("encoder_out", f, ["N", "S", d])],
        {"model_type": "whisper-encoder", "d_model": str(d), "num_heads": str(heads)},
    )


def build_cross_kv(w: dict[str, np.ndarray]):  # noqa: ANN201
    """``encoder_out`` (N, S, d) -> the decoder's cross-attention keys/values, once per segment.

    Separate from the encoder so the same graph serves the teacher's frames and the student's."""
    from onnx import TensorProto  # noqa: PLC0415

    dims = dims_of(w)
    g = _Graph()
    h = g.helper
    d, layers, heads = dims.d_model, dims.decoder_layers, dims.num_heads
    hd = d // heads
    enc = "encoder_out"
    for i in range(layers):
        p = f"decoder/layer_{i}/attention/linear_1"
        k, v = g.op(
            "Split",
            g.linear(enc, w[f"{p}/weight"], w[f"{p}/bias"]),
            g.const(np.array([d, d], np.int64)),
            axis=-1,
            outputs=2,
        )
        # Arranged per head once here, so no decoder step moves them: keys (N, H, hd, S), values
        # (N, H, S, hd), one tensor per layer (re-arranging or slicing them at every step cost more
        # than the attention itself).
        g.op("Transpose", g.heads(k, heads, hd), perm=[0, 1, 3, 2], out_names=[f"cross_key_{i}"])
        g.op("Identity", g.heads(v, heads, hd), out_names=[f"cross_value_{i}"])
    f = TensorProto.FLOAT
    return g.model(
        [h.make_tensor_value_info("encoder_out", f, ["N", "S", d])],
        [
            info
            for i in range(layers)
            for info in (
                h.make_tensor_value_info(f"cross_key_{i}", f, ["N", heads, hd, "S"]),
                h.make_tensor_value_info(f"cross_value_{i}", f, ["N", heads, "S", hd]),
            )
        ],
        {"model_type": "whisper-cross-kv", "num_layers": str(layers)},
    )


def build_decoder(w: dict[str, np.ndarray], untied_projection: bool = False):  # noqa: ANN201
    from onnx import TensorProto  # noqa: PLC0415

    dims = dims_of(w)
    g = _Graph()
    h = g.helper
    d, heads, layers = dims.d_model, dims.num_heads, dims.decoder_layers
    i64 = lambda v: g.const(np.array(v, np.int64))  # noqa: E731
    past = g.op("Slice", g.op("Shape", "self_key"), i64([2]), i64([3]))  # P, shape (1,)
    new = g.op("Slice", g.op("Shape", "tokens"), i64([1]), i64([2]))  # n
    total = g.op("Add", past, new)
    emb = _f(w, "decoder/embeddings/weight")
    x = g.op("Gather", g.const(emb, "embedding"), "tokens", axis=0)
    # Row r's first self_pad[r] slots are padding (prompts of different lengths, left-aligned to the
    # same end): its token in slot j sits at position j - self_pad[r]; its padding slots are masked.
    kpos = g.op("Range", i64(0), g.op("Squeeze", total, i64([0])), i64(1))
    qpos = g.op("Range", g.op("Squeeze", past, i64([0])), g.op("Squeeze", total, i64([0])), i64(1))
    pad = g.op("Unsqueeze", "self_pad", i64([1]))  # (N, 1)
    positions = g.op("Max", g.op("Sub", g.op("Unsqueeze", qpos, i64([0])), pad), i64(0))  # (N, n)
    pe = g.op("Gather", g.const(_f(w, "decoder/position_encodings/encodings")), positions, axis=0)
    x = g.op("Add", x, pe)
    # Causal mask of the new queries over all keys (key slot > query slot -> -inf) and each row's
    # padding slots: (N, 1, n, P + n), added to every head's scores.
    future = g.op("Greater", g.op("Unsqueeze", kpos, i64([0])), g.op("Unsqueeze", qpos, i64([1])))
    padding = g.op("Less", g.op("Unsqueeze", kpos, i64([0])), pad)  # (N, P + n)
    blocked = g.op("Or", g.op("Unsqueeze", future, i64([0])), g.op("Unsqueeze", padding, i64([1])))
    mask = g.op("Unsqueeze", g.op("Where", blocked, g.const(np.float32(-1e9)), g.const(np.float32(0.0))),
                i64([1]))
    cross_mask = g.key_padding_mask("cross_value_0", "cross_frames", axis=2)
    new_keys, new_values = [], []
    for i in range(layers):
        p = f"decoder/layer_{i}"
        layer = i64(i)
        hn = g.layer_norm(
            x, w[f"{p}/self_attention/layer_norm/gamma"], w[f"{p}/self_attention/layer_norm/beta"]
        )
        q, k, v = g.op(
            "Split",
            g.linear(hn, w[f"{p}/self_attention/linear_0/weight"], w[f"{p}/self_attention/linear_0/bias"]),
            i64([d, d, d]),
            axis=-1,
            outputs=3,
        )
        k_all = g.op("Concat", g.op("Gather", "self_key", layer, axis=0), k, axis=1)
        v_all = g.op("Concat", g.op("Gather", "self_value", layer, axis=0), v, axis=1)
        new_keys.append(g.op("Unsqueeze", k_all, i64([0])))
        new_values.append(g.op("Unsqueeze", v_all, i64([0])))
        att = g.attention(q, k_all, v_all, heads, d, mask)
        x = g.op(
            "Add",
            x,
            g.linear(att, w[f"{p}/self_attention/linear_1/weight"], w[f"{p}/self_attention/linear_1/bias"]),
        )
        hn = g.layer_norm(x, w[f"{p}/attention/layer_norm/gamma"], w[f"{p}/attention/layer_norm/beta"])
        q = g.linear(hn, w[f"{p}/attention/linear_0/weight"], w[f"{p}/attention/linear_0/bias"])
        att = g.attention_heads(
            q,
            f"cross_key_{i}",
            f"cross_value_{i}",
            heads,
            d,
            cross_mask,
        )
        x = g.op(
            "Add", x, g.linear(att, w[f"{p}/attention/linear_2/weight"], w[f"{p}/attention/linear_2/bias"])
        )
        x = _feed_forward(g, w, p, x)
    g.op("Concat", *new_keys, axis=0, out_names=["new_self_key"])
    g.op("Concat", *new_values, axis=0, out_names=["new_self_value"])
    last = g.op("Squeeze", g.op("Slice", x, i64([-1]), i64([np.iinfo(np.int64).max]), i64([1])), i64([1]))
    last = g.layer_norm(last, w["decoder/layer_norm/gamma"], w["decoder/layer_norm/beta"])
    if untied_projection:
        # Its own (d, vocab) copy as a MatMul, so weight quantization can reach the output projection
        # (the largest weight read per token) while the embedding lookup stays float.
        g.op("MatMul", last, g.const(np.ascontiguousarray(emb.T), "projection"), out_names=["logits"])
    else:
        # Tied output projection: the same (vocab, d) table as the token embedding, shared initializer.
        g.op("Gemm", last, "embedding_" + _suffix(g, "embedding"), transB=1, out_names=["logits"])
    f = TensorProto.FLOAT
    cache = [layers, "N", "P", d]
    return g.model(
        [
            h.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "n"]),
            h.make_tensor_value_info("self_key", f, cache),
            h.make_tensor_value_info("self_value", f, cache),
            *(
                info
                for i in range(layers)
                for info in (
                    h.make_tensor_value_info(f"cross_key_{i}", f, ["N", heads, d // heads, "S"]),
                    h.make_tensor_value_info(f"cross_value_{i}", f, ["N", heads, "S", d // heads]),
                )
            ),
            h.make_tensor_value_info("cross_frames", TensorProto.INT64, ["N"]),
            h.make_tensor_value_info("self_pad", TensorProto.INT64, ["N"]),
        ],
        [
            h.make_tensor_value_info("logits", f, ["N", dims.vocab_size]),
            h.make_tensor_value_info("new_self_key", f, [layers, "N", "Pn", d]),
            h.make_tensor_value_info("new_self_value", f, [layers, "N", "Pn", d]),
        ],
        {
            "model_type": "whisper-decoder",
            "d_model": str(d),
            "num_heads": str(heads),
            "num_layers": str(layers),
            "vocab_size": str(dims.vocab_size),
            "max_positions": str(dims.max_target_positions),
        },
    )


def _suffix(g: _Graph, hint: str) -> str:
    """Counter suffix of the (single) initializer created with ``hint``."""
    for init in g.initializers:
        if init.name.startswith(hint + "_"):
            return init.name.split("_")[-1]
    raise KeyError(hint)


def quantize_int8(model, path: Path) -> None:  # noqa: ANN001 (an onnx.ModelProto)
    """Writes ``model`` with every MatMul's weights as int8 (blocks of 32, symmetric), atomically.

    ONNX Runtime's MatMulNBits at accuracy level 4 quantizes each activation row on its own, so a row
    gives the same result in any batch (dynamic quantization of the whole input would not: a row's
    text would depend on what it was batched with)."""
    import logging  # noqa: PLC0415

    from onnxruntime.quantization.matmul_nbits_quantizer import (  # noqa: PLC0415
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.WARNING)  # it reports every MatMul at INFO
    try:
        config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=8)
        quantizer = MatMulNBitsQuantizer(model, algo_config=config)
        quantizer.process()
    finally:
        logger.setLevel(level)
    save_model(quantizer.model.model, path)


def save_model(model, path: Path) -> None:  # noqa: ANN001
    """Writes atomically (temp file + rename) so an interrupted conversion never leaves half a file."""
    import onnx  # noqa: PLC0415

    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
