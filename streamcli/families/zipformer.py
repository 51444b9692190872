"""Zipformer transducer family (sherpa-onnx folder layout: encoder/decoder/joiner .onnx + tokens.txt).

Two encoder interfaces, told apart by the encoder's ``model_type`` metadata:

- ``zipformer`` (version 1, icefall pruned_transducer_stateless7_streaming, e.g. the 20M model):
  inputs ``x`` (N, T, 80) then 7 state groups x num_stacks, in this order:
  ``cached_len_i`` (layers_i, N) int64, ``cached_avg_i`` (layers_i, N, encoder_dim_i),
  ``cached_key_i`` (layers_i, left_i, N, attention_dim_i), ``cached_val_i`` and ``cached_val2_i``
  (layers_i, left_i, N, attention_dim_i / 2), ``cached_conv1_i`` and ``cached_conv2_i``
  (layers_i, N, encoder_dim_i, kernel_i - 1); outputs ``encoder_out`` then the new states in the
  same order. Metadata: T, decode_chunk_len, num_encoder_layers, encoder_dims, attention_dims,
  cnn_module_kernels, left_context_len.
- ``zipformer2`` (icefall zipformer streaming): per layer (over all stacks) ``cached_key``
  (left, N, query_head_dim * heads), ``cached_nonlin_attn`` (1, N, left, 3 * dim / 4),
  ``cached_val1``/``cached_val2`` (left, N, value_head_dim * heads), ``cached_conv1``/``cached_conv2``
  (N, dim, kernel / 2); then ``embed_states`` (N, 128, 3, (((feature_dim - 1) // 2) - 1) // 2) and
  ``processed_lens`` (N,) int64. Metadata adds query_head_dims, value_head_dims, num_heads.

The encoder consumes T feature frames per call and advances decode_chunk_len (the rest is right
context); one call yields decode_chunk_len / 4 encoder frames (40 ms each). States are zeros at the
start, fed back after every chunk and stacked along their batch axis to decode several streams in one
call. Decoder: ``y`` (N, context_size) int64 -> ``decoder_out``; joiner (``encoder_out``,
``decoder_out``) -> ``logit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamcli.errors import ModelError
from streamcli.features import FRAMES_30_S
from streamcli.providers import create_model_sessions, resolve_threads
from streamcli.recognizer import ModelInfo, Recognizer, RecognizerConfig
from streamcli.search import BeamState, GreedyHyp, greedy_search, initial_context, modified_beam_search
from streamcli.tokens import TokenTable

SUBSAMPLING = 4
FEATURE_DIM = 80
SAMPLE_RATE = 16000
FRAME_SHIFT_MS = 10
_DECODER_CACHE_SIZE = 2048  # contexts memoised (2048 x 512 floats = 4 MB at most)
V1_STATE_KINDS = ("len", "avg", "key", "val", "val2", "conv1", "conv2")


@dataclass(frozen=True)
class StateSpec:
    """One cached-state input: its initial shape for one stream and the axis streams stack along."""

    name: str
    shape: tuple[int, ...]  # with batch size 1 at batch_axis
    batch_axis: int
    dtype: type

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=self.dtype)


MAX_CHUNK_FRAMES = FRAMES_30_S  # no streaming zipformer has a chunk near this


def _ints(meta: dict[str, str], key: str, path: Path) -> list[int]:
    if key not in meta:
        raise ModelError(f"{path}: encoder metadata lacks {key!r}")
    try:
        return [int(v) for v in meta[key].replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ModelError(f"{path}: encoder metadata {key}={meta[key]!r} is not a list of integers") from None


def _int(meta: dict[str, str], key: str, path: Path) -> int:
    values = _ints(meta, key, path)
    if len(values) != 1:
        raise ModelError(f"{path}: encoder metadata {key}={meta[key]!r} is not one integer")
    return values[0]


def v1_state_specs(meta: dict[str, str], path: Path) -> list[StateSpec]:
    layers = _ints(meta, "num_encoder_layers", path)
    dims = _ints(meta, "encoder_dims", path)
    att = _ints(meta, "attention_dims", path)
    kernels = _ints(meta, "cnn_module_kernels", path)
    left = _ints(meta, "left_context_len", path)
    if not len(layers) == len(dims) == len(att) == len(kernels) == len(left):
        raise ModelError(f"{path}: encoder metadata lists have different lengths")
    specs: list[StateSpec] = []
    for kind in V1_STATE_KINDS:
        for i in range(len(layers)):
            shape, axis, dtype = {
                "len": ((layers[i], 1), 1, np.int64),
                "avg": ((layers[i], 1, dims[i]), 1, np.float32),
                "key": ((layers[i], left[i], 1, att[i]), 2, np.float32),
                "val": ((layers[i], left[i], 1, att[i] // 2), 2, np.float32),
                "val2": ((layers[i], left[i], 1, att[i] // 2), 2, np.float32),
                "conv1": ((layers[i], 1, dims[i], kernels[i] - 1), 1, np.float32),
                "conv2": ((layers[i], 1, dims[i], kernels[i] - 1), 1, np.float32),
            }[kind]
            specs.append(StateSpec(f"cached_{kind}_{i}", shape, axis, dtype))
    return specs


def v2_state_specs(meta: dict[str, str], path: Path, feature_dim: int = FEATURE_DIM) -> list[StateSpec]:
    layers = _ints(meta, "num_encoder_layers", path)
    dims = _ints(meta, "encoder_dims", path)
    qdims = _ints(meta, "query_head_dims", path)
    vdims = _ints(meta, "value_head_dims", path)
    heads = _ints(meta, "num_heads", path)
    kernels = _ints(meta, "cnn_module_kernels", path)
    left = _ints(meta, "left_context_len", path)
    if not len(layers) == len(dims) == len(qdims) == len(vdims) == len(heads) == len(kernels) == len(left):
        raise ModelError(f"{path}: encoder metadata lists have different lengths")
    specs: list[StateSpec] = []
    layer = 0
    for i in range(len(layers)):
        key_dim, value_dim = qdims[i] * heads[i], vdims[i] * heads[i]
        for _ in range(layers[i]):
            f32 = np.float32
            specs += [
                StateSpec(f"cached_key_{layer}", (left[i], 1, key_dim), 1, f32),
                StateSpec(f"cached_nonlin_attn_{layer}", (1, 1, left[i], 3 * dims[i] // 4), 1, f32),
                StateSpec(f"cached_val1_{layer}", (left[i], 1, value_dim), 1, f32),
                StateSpec(f"cached_val2_{layer}", (left[i], 1, value_dim), 1, f32),
                StateSpec(f"cached_conv1_{layer}", (1, dims[i], kernels[i] // 2), 0, f32),
                StateSpec(f"cached_conv2_{layer}", (1, dims[i], kernels[i] // 2), 0, f32),
            ]
            layer += 1
    embed_dim = (((feature_dim - 1) // 2) - 1) // 2
    specs.append(StateSpec("embed_states", (1, 128, 3, embed_dim), 0, np.float32))
    specs.append(StateSpec("processed_lens", (1,), 0, np.int64))
    return specs


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}


class ZipformerStreamState:
    """Per-stream encoder caches and search state."""

    __slots__ = ("states", "search")

    def __init__(self, states: list[np.ndarray], search: GreedyHyp | BeamState) -> None:
        self.states = states
        self.search = search


class ZipformerTransducer(Recognizer):
    """Streaming zipformer transducer (version 1 or zipformer2) on onnxruntime."""

    def __init__(self, config: RecognizerConfig, folder: Path, metadata: dict[str, str]) -> None:
        super().__init__(config)
        folder = Path(folder)
        model_type = metadata.get("model_type", "")
        threads = resolve_threads(config.threads)
        sessions, files, provider, notice = create_model_sessions(
            folder, ["encoder", "decoder", "joiner"], config.device, threads
        )
        self.encoder, self.decoder, self.joiner = sessions["encoder"], sessions["decoder"], sessions["joiner"]
        enc_path = files["encoder"]
        meta = metadata  # read once by the factory (streamcli.families.detect_family)
        self.chunk_frames = _int(meta, "T", enc_path)
        self.shift_frames = _int(meta, "decode_chunk_len", enc_path)
        # Metadata that lies must be refused here, not loop forever or fail at the first decode.
        if not 0 < self.shift_frames <= self.chunk_frames <= MAX_CHUNK_FRAMES:
            raise ModelError(
                f"{enc_path}: metadata decode_chunk_len={self.shift_frames}, T={self.chunk_frames}: need "
                f"0 < decode_chunk_len <= T <= {MAX_CHUNK_FRAMES}"
            )
        x_shape = self.encoder.get_inputs()[0].shape
        graph_t = x_shape[1] if len(x_shape) == 3 else None
        if isinstance(graph_t, int) and graph_t != self.chunk_frames:
            raise ModelError(
                f"{enc_path}: metadata T={self.chunk_frames} but the graph's input x takes {graph_t} frames"
            )
        if model_type == "zipformer":
            self.state_specs = v1_state_specs(meta, enc_path)
        elif model_type == "zipformer2":
            self.state_specs = v2_state_specs(meta, enc_path)
        else:
            raise ModelError(f"{enc_path}: model_type {model_type!r} is not a zipformer")
        self._check_encoder_io(enc_path)

        dec_meta = self.decoder.get_modelmeta().custom_metadata_map
        self.context_size = _int(dec_meta, "context_size", files["decoder"])
        self.vocab_size = _int(dec_meta, "vocab_size", files["decoder"])
        self._check_decoder_io(files["decoder"], files["joiner"])
        self.tokens = TokenTable.from_file(folder / "tokens.txt")
        # tokens.txt may list extra symbols after the vocabulary (e.g. #0, #1 for decoding graphs).
        if len(self.tokens) < self.vocab_size:
            raise ModelError(
                f"{folder}: tokens.txt has {len(self.tokens)} tokens, "
                f"fewer than the decoder's vocab_size {self.vocab_size}"
            )
        self.blank_id = self.tokens.blank_id
        self.unk_id = self.tokens.unk_id
        self._dec_cache: dict[tuple[int, ...], np.ndarray] = {}
        self._dec_in = self.decoder.get_inputs()[0].name
        self._dec_out = [self.decoder.get_outputs()[0].name]
        self._join_in = [i.name for i in self.joiner.get_inputs()]
        self._join_out = [self.joiner.get_outputs()[0].name]
        self._search = config.search
        self._beam = config.beam

        state_bytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in self.state_specs)
        first_left = _ints(meta, "left_context_len", enc_path)[0]
        self.info = ModelInfo(
            family="zipformer-transducer",
            name=folder.name,
            path=folder,
            sample_rate=SAMPLE_RATE,
            feature_dim=FEATURE_DIM,
            frame_shift_ms=FRAME_SHIFT_MS,
            chunk_frames=self.chunk_frames,
            shift_frames=self.shift_frames,
            # One meaning for every family: a step attends to window_frames feature frames, of which
            # overlap_frames come from the cache. Here the cache is the first stack's left context
            # (it runs at 50 Hz: 2 feature frames per step) and the new frames are one chunk's shift.
            window_frames=2 * first_left + self.shift_frames,
            overlap_frames=2 * first_left,
            subsampling=SUBSAMPLING,
            provider=provider,
            threads=threads,
            state_bytes=state_bytes,
            decoding=self._search if self._search == "greedy" else f"modified_beam_search(beam={self._beam})",
            files=tuple(p.name for p in files.values()),
            device_notice=notice,
        )

    def _check_decoder_io(self, dec_path: Path, join_path: Path) -> None:
        """context_size and vocab_size must agree with the decoder's input and the joiner's output."""
        if not 0 < self.context_size <= 16 or not 0 < self.vocab_size <= 1_000_000:
            raise ModelError(f"{dec_path}: metadata context_size={self.context_size}, vocab_size="
                             f"{self.vocab_size} out of range")
        y = self.decoder.get_inputs()[0]
        if len(y.shape) == 2 and isinstance(y.shape[1], int) and y.shape[1] != self.context_size:
            raise ModelError(f"{dec_path}: metadata context_size={self.context_size} but input {y.name} "
                             f"takes {y.shape[1]} tokens")
        logit = self.joiner.get_outputs()[0]
        if logit.shape and isinstance(logit.shape[-1], int) and logit.shape[-1] != self.vocab_size:
            raise ModelError(f"{join_path}: joiner gives {logit.shape[-1]} logits, the decoder metadata says "
                             f"vocab_size={self.vocab_size}")

    def _check_encoder_io(self, path: Path) -> None:
        inputs = self.encoder.get_inputs()
        outputs = self.encoder.get_outputs()
        if len(inputs) != 1 + len(self.state_specs) or len(outputs) != len(inputs):
            raise ModelError(
                f"{path}: expected 1 + {len(self.state_specs)} inputs and as many outputs from the metadata, "
                f"got {len(inputs)} inputs, {len(outputs)} outputs"
            )
        x = inputs[0]
        if len(x.shape) != 3 or (isinstance(x.shape[2], int) and x.shape[2] != FEATURE_DIM):
            raise ModelError(f"{path}: input {x.name} has shape {x.shape}, expected (N, T, {FEATURE_DIM})")
        specs = []
        for spec, inp in zip(self.state_specs, inputs[1:], strict=False):
            dtype = _ORT_DTYPES.get(inp.type)
            if dtype is None:
                raise ModelError(f"{path}: state input {inp.name} has unsupported type {inp.type}")
            for axis, (want, got) in enumerate(zip(spec.shape, inp.shape, strict=False)):
                if axis != spec.batch_axis and isinstance(got, int) and got != want:
                    raise ModelError(
                        f"{path}: state input {inp.name} has shape {inp.shape}, metadata implies {spec.shape}"
                    )
            # Feed by the session's own input names, in the session's order (as sherpa-onnx does).
            specs.append(StateSpec(inp.name, spec.shape, spec.batch_axis, dtype))
        self.state_specs = specs
        self._x_name = x.name
        self._enc_out_names = [o.name for o in outputs]

    # ----- transducer nets (search.TransducerNets) ---------------------------------------------------
    def run_decoder(self, y: np.ndarray) -> np.ndarray:
        """Decoder outputs for (M, context_size) contexts, memoised per context.

        The decoder is a pure function of its last context_size tokens and common contexts recur
        (" OF THE"), so a bounded memo saves most decoder calls; misses run as one batch.
        """
        cache = self._dec_cache
        keys = [tuple(row) for row in y.tolist()]
        rows = [cache.get(k) for k in keys]
        missing = [i for i, r in enumerate(rows) if r is None]
        if missing:
            fresh = self.decoder.run(self._dec_out, {self._dec_in: y[missing]})[0]
            if len(cache) + len(missing) > _DECODER_CACHE_SIZE:
                cache.clear()  # simple bound; refills with the contexts in use
            for i, row in zip(missing, fresh, strict=True):
                rows[i] = cache[keys[i]] = row
        return np.stack(rows)

    def run_joiner(self, encoder_out: np.ndarray, decoder_out: np.ndarray) -> np.ndarray:
        return self.joiner.run(
            self._join_out, {self._join_in[0]: encoder_out, self._join_in[1]: decoder_out}
        )[0]

    def run_encoder(self, x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One encoder call: x (N, T, 80) and stacked states -> encoder_out (N, T', D), new states."""
        feed = {self._x_name: x}
        for spec, value in zip(self.state_specs, states, strict=False):
            feed[spec.name] = value
        out = self.encoder.run(self._enc_out_names, feed)
        return out[0], out[1:]

    def initial_states(self) -> list[np.ndarray]:
        return [s.zeros() for s in self.state_specs]

    # ----- Recognizer hooks ----------------------------------------------------------------------------
    def new_stream_state(self) -> ZipformerStreamState:
        if self._search == "greedy":
            search: GreedyHyp | BeamState = GreedyHyp(
                context=initial_context(self.context_size, self.blank_id)
            )
        else:
            search = BeamState.initial(self.context_size, self.blank_id)
        return ZipformerStreamState(self.initial_states(), search)

    def decode_chunk(self, features: np.ndarray, states: list[Any], frame_offsets: list[int]) -> None:
        n = len(states)
        if n == 1:
            stacked = states[0].states
        else:
            stacked = [
                np.concatenate([st.states[k] for st in states], axis=spec.batch_axis)
                for k, spec in enumerate(self.state_specs)
            ]
        encoder_out, new_states = self.run_encoder(features, stacked)
        if n == 1:
            states[0].states = new_states
        else:
            split = [
                np.split(v, n, axis=spec.batch_axis)
                for v, spec in zip(new_states, self.state_specs, strict=False)
            ]
            for i, st in enumerate(states):
                st.states = [parts[i] for parts in split]
        searches = [st.search for st in states]
        if self._search == "greedy":
            greedy_search(self, encoder_out, searches, frame_offsets)
        else:
            modified_beam_search(self, encoder_out, searches, frame_offsets, self._beam)

    def hypothesis(self, state: ZipformerStreamState) -> tuple[list[int], list[int]]:
        # greedy: the live lists (callers only read them); beam: built from the best hypothesis
        return state.search.tokens, state.search.frames

    def start_new_utterance(self, state: ZipformerStreamState) -> None:
        state.search.start_new_utterance()
