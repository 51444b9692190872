"""Windowed-attention CTC family ("wctc"): our streaming encoder run by onnxruntime, greedy CTC search.

One encoder call takes the hop = W - O new 10 ms feature frames of each stream plus its caches
(attention keys/values of the last O/s encoder frames, the causal conv context, a valid-frame count)
and returns CTC logits for hop/s encoder frames and the updated caches, so the work per call is the
same at any stream position. The subsampling s is the model's (metadata ``subsampling``): 2 for the
shipped default (20 ms encoder frames), 5 for the small character model (50 ms). The layout of the
ONNX file is described in :mod:`streamcli_tools.train.export` and in the README; this module only needs
onnxruntime and numpy.

The window and overlap default to the values in the model's metadata and can be overridden per
recognizer (``RecognizerConfig.window_frames/overlap_frames``): the same file serves any W/O that are
multiples of the subsampling factor with 0 <= O < W.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamcli.errors import ModelError
from streamcli.finals import SecondPass
from streamcli.providers import create_model_sessions, resolve_threads
from streamcli.recognizer import ModelInfo, Recognizer, RecognizerConfig, validate_window
from streamcli.search import ctc_greedy
from streamcli.tokens import TokenTable

FAMILY = "wctc"
_REQUIRED_METADATA = (
    "window_frames",
    "overlap_frames",
    "frame_shift_ms",
    "feature_dim",
    "subsampling",
    "vocab_size",
    "blank_id",
    "cache_names",
    "cache_shapes",
)


def cache_shape(spec: list[int | str], batch: int, overlap_frames: int, subsampling: int) -> tuple[int, ...]:
    """A metadata shape such as ["N", 6, "overlap_frames/5", 144] made concrete."""
    dims = []
    for d in spec:
        if d == "N":
            dims.append(batch)
        elif d == f"overlap_frames/{subsampling}":
            dims.append(overlap_frames // subsampling)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise ModelError(f"unknown cache dimension {d!r} in the model metadata")
    return tuple(dims)


@dataclass
class WctcState:
    """Per-stream state: encoder caches (batch dim 1), the greedy CTC search, and the last window's
    outputs (logits, hidden frames) for whoever records the utterance (streamcli.finals)."""

    caches: dict[str, np.ndarray]
    prev_token: int
    token_ids: list[int] = field(default_factory=list)
    token_frames: list[int] = field(default_factory=list)
    last_logits: np.ndarray | None = None
    last_hidden: np.ndarray | None = None


class WctcRecognizer(Recognizer):
    """Recognizer for a wctc model folder (encoder.onnx and/or encoder.int8.onnx, tokens.txt)."""

    def __init__(self, config: RecognizerConfig, folder: Path, metadata: dict[str, str]) -> None:
        super().__init__(config)
        missing = [k for k in _REQUIRED_METADATA if k not in metadata]
        if missing:
            raise ModelError(f"{folder}: wctc encoder metadata lacks {', '.join(missing)}")
        try:
            self.subsampling = int(metadata["subsampling"])
            feature_dim = int(metadata["feature_dim"])
            frame_shift_ms = int(metadata["frame_shift_ms"])
            vocab_size = int(metadata["vocab_size"])
            self.blank_id = int(metadata["blank_id"])
            # CTC frames per encoder frame (2 = 25 ms CTC frames from 50 ms encoder frames).
            self.ctc_upsample = int(metadata.get("ctc_upsample", "1"))
            default_window = int(metadata["window_frames"])
            default_overlap = int(metadata["overlap_frames"])
            self.cache_names: list[str] = list(json.loads(metadata["cache_names"]))
            self.cache_specs: dict[str, list[int | str]] = json.loads(metadata["cache_shapes"])
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ModelError(f"{folder}: malformed wctc metadata ({e})") from None
        window = config.window_frames if config.window_frames is not None else default_window
        overlap = config.overlap_frames if config.overlap_frames is not None else default_overlap
        validate_window(window, overlap, self.subsampling)

        self.tokens = TokenTable.from_file(folder / "tokens.txt")
        if len(self.tokens) != vocab_size:
            raise ModelError(f"{folder}: tokens.txt has {len(self.tokens)} tokens, the encoder {vocab_size}")
        threads = resolve_threads(config.threads)
        sessions, files, provider, notice = create_model_sessions(folder, ["encoder"], config.device, threads)
        self.session = sessions["encoder"]
        inputs = {i.name for i in self.session.get_inputs()}
        expected = {"x", *self.cache_names}
        if inputs != expected:
            raise ModelError(
                f"{files['encoder']}: inputs {sorted(inputs)} do not match the metadata {sorted(expected)}"
            )
        outputs = {o.name for o in self.session.get_outputs()}
        self.output_names = ["logits", *(f"new_{n}" for n in self.cache_names)]
        self.feature_type = metadata.get("feature_type", "kaldi_fbank")
        self._has_hidden_output = "hidden" in outputs
        hop = window - overlap
        state_bytes = sum(
            int(np.prod(cache_shape(self.cache_specs[n], 1, overlap, self.subsampling))) * 4
            for n in self.cache_names
        )
        self.info = ModelInfo(
            family=FAMILY,
            name=metadata.get("model_name", folder.name),
            path=folder,
            sample_rate=16000,
            feature_dim=feature_dim,
            frame_shift_ms=frame_shift_ms,
            chunk_frames=hop,
            shift_frames=hop,
            window_frames=window,
            overlap_frames=overlap,
            subsampling=self.subsampling,
            provider=provider,
            threads=threads,
            state_bytes=state_bytes,
            decoding="greedy",
            files=(files["encoder"].name, "tokens.txt"),
            device_notice=notice,
            feature_type=self.feature_type,
        )

    # ----- family hooks ---------------------------------------------------------------------------
    def attach_second_pass(self, second_pass: SecondPass) -> None:
        if second_pass.needs_hidden:
            if not self._has_hidden_output:
                raise ValueError(
                    f"{self.info.path.name}: the encoder has no hidden output for second_pass_frames=student"
                )
            self.output_names.append("hidden")
        super().attach_second_pass(second_pass)

    def initial_caches(self, batch: int) -> dict[str, np.ndarray]:
        """Zero caches for ``batch`` new streams (all-zero valid count masks the empty cache)."""
        return {
            n: np.zeros(
                cache_shape(self.cache_specs[n], batch, self.info.overlap_frames, self.subsampling),
                np.float32,
            )
            for n in self.cache_names
        }

    def new_stream_state(self) -> WctcState:
        return WctcState(caches=self.initial_caches(1), prev_token=self.blank_id)

    def run_encoder(
        self, features: np.ndarray, caches: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One encoder call: (N, T, feature_dim) features, T a multiple of the subsampling -> (logits,
        new caches); the student's hidden frames, when requested, are kept in ``self.last_hidden``."""
        outs = self.session.run(self.output_names, {"x": features, **caches})
        n = len(self.cache_names)
        self.last_hidden = outs[1 + n] if len(outs) > 1 + n else None
        return outs[0], dict(zip(self.cache_names, outs[1 : 1 + n], strict=True))

    def decode_chunk(self, features: np.ndarray, states: list[WctcState], frame_offsets: list[int]) -> None:
        caches = {n: np.concatenate([s.caches[n] for s in states], axis=0) for n in self.cache_names}
        logits, new = self.run_encoder(np.ascontiguousarray(features, dtype=np.float32), caches)
        for i, s in enumerate(states):
            s.caches = {n: new[n][i : i + 1] for n in self.cache_names}
            s.last_logits = logits[i]
            s.last_hidden = self.last_hidden[i] if self.last_hidden is not None else None
            u = self.ctc_upsample
            ids, frames, s.prev_token = ctc_greedy(
                logits[i], self.blank_id, s.prev_token, frame_offsets[i] * u
            )
            s.token_ids.extend(ids)
            s.token_frames.extend(f // u for f in frames)  # times in encoder frames (50 ms)

    def chunk_outputs(self, state: WctcState) -> tuple[np.ndarray | None, np.ndarray | None]:
        return state.last_logits, state.last_hidden

    def hypothesis(self, state: WctcState) -> tuple[list[int], list[int]]:
        return state.token_ids, state.token_frames

    def start_new_utterance(self, state: WctcState) -> None:
        # prev_token stays: a token whose frames straddle the reset is not emitted twice.
        state.token_ids = []
        state.token_frames = []

    # ----- whole-signal helpers (evaluation, timing) ------------------------------------------------
    def stream_features(self, features: np.ndarray) -> np.ndarray:
        """Streams a whole (T, feature_dim) matrix hop by hop -> (ceil(T/5) * ctc_upsample, V) logits.

        The last chunk may be shorter than the hop; a tail of fewer than 5 frames is padded with copies
        of the last frame (a partial encoder frame cannot be computed).
        """
        hop = self.info.shift_frames
        t = features.shape[0]
        pad = (-t) % self.subsampling
        if pad:
            features = np.concatenate([features, np.repeat(features[-1:], pad, axis=0)])
        caches = self.initial_caches(1)
        outs = []
        for start in range(0, features.shape[0], hop):
            logits, caches = self.run_encoder(features[None, start : start + hop].astype(np.float32), caches)
            outs.append(logits[0])
        return np.concatenate(outs) if outs else np.zeros((0, len(self.tokens)), np.float32)
