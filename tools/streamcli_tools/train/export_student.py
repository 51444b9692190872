"""ONNX export of the Whisper-initialised streaming student (torch; train extra only).

One streaming step, ``WhisperStudent.forward_chunk``, in the wctc family's interface:
  inputs   x               (N, T, 80)      float32  T new 10 ms Whisper log10-mel frames, T even
           cache_key       (N, L, O/2, D)  float32  per-layer attention keys of the last O/2 encoder frames
           cache_value     (N, L, O/2, D)  float32  their values
           cache_conv_in   (N, 80, 2)      float32  the last 2 normalised input frames (causal conv1)
           cache_conv_mid  (N, D, 2)       float32  the last 2 conv1 outputs (causal conv2)
           cache_valid     (N, 1)          float32  how many of the O/2 cached frames are real
  outputs  logits          (N, T/2, V)     CTC logits over the character table (blank 0)
           new_cache_*     as the inputs
           hidden          (N, T/2, D)     final hidden frames (what the second pass can read)
N, T and O/2 are dynamic: one file serves any even W/O with 0 <= O < W.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from streamcli_tools.train.export import publish_with_metadata, wctc_metadata
from streamcli_tools.train.whisper_student import SUBSAMPLING, WhisperStudent, check_window, count_parameters

CACHE_NAMES = ("cache_key", "cache_value", "cache_conv_in", "cache_conv_mid", "cache_valid")


class _Step(nn.Module):
    def __init__(self, model: WhisperStudent) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, cache_key, cache_value, cache_conv_in, cache_conv_mid, cache_valid):  # noqa: ANN001, ANN201
        logits, hidden, *caches = self.model.forward_chunk(
            x, cache_key, cache_value, cache_conv_in, cache_conv_mid, cache_valid
        )
        return (logits, *caches, hidden)


def cache_shapes(model: WhisperStudent) -> dict[str, list[int | str]]:
    cfg = model.cfg
    o = f"overlap_frames/{SUBSAMPLING}"
    return {
        "cache_key": ["N", cfg.num_layers, o, cfg.d_model],
        "cache_value": ["N", cfg.num_layers, o, cfg.d_model],
        "cache_conv_in": ["N", cfg.n_mels, 2],
        "cache_conv_mid": ["N", cfg.d_model, 2],
        "cache_valid": ["N", 1],
    }


def export_student(
    model: WhisperStudent,
    path: str | os.PathLike[str],
    window_frames: int,
    overlap_frames: int,
    *,
    model_name: str,
    extra_metadata: dict[str, str] | None = None,
) -> dict[str, str]:
    """Writes the streaming-step ONNX file atomically; returns its metadata."""
    check_window(window_frames, overlap_frames)
    model = model.eval().cpu()
    cache = model.initial_cache(2, 6)
    cache["cache_valid"] = torch.full((2, 1), 1.0)
    x = torch.randn(2, 10, model.cfg.n_mels) - 3.0
    outputs = ["logits", *(f"new_{n}" for n in CACHE_NAMES), "hidden"]
    dynamic = {"x": {0: "N", 1: "T"}, "logits": {0: "N", 1: "T_out"}, "hidden": {0: "N", 1: "T_out"}}
    for n in CACHE_NAMES:
        axes = {0: "N", 2: "O_enc"} if n in ("cache_key", "cache_value") else {0: "N"}
        dynamic[n] = axes
        dynamic[f"new_{n}"] = axes
    cfg = model.cfg
    meta = wctc_metadata(
        model_name=model_name, window_frames=window_frames, overlap_frames=overlap_frames,
        subsampling=SUBSAMPLING, feature_dim=cfg.n_mels, vocab_size=cfg.vocab_size,
        num_layers=cfg.num_layers, d_model=cfg.d_model, num_heads=cfg.num_heads,
        max_rel_distance=cfg.max_rel_distance, num_parameters=count_parameters(model),
        cache_shapes=cache_shapes(model),
    )
    meta.update({"feature_type": "whisper_log10_mel", "log_mel_floor": str(cfg.log_mel_floor)})
    meta.update(extra_metadata or {})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_file = Path(tmp) / out.name
        with torch.no_grad():
            torch.onnx.export(
                _Step(model).eval(),
                (x, *cache.values()),
                str(tmp_file),
                input_names=["x", *CACHE_NAMES],
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
        publish_with_metadata(tmp_file, out, meta)
    return meta
