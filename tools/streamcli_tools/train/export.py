"""ONNX export of the windowed-CTC encoder (torch; imported lazily by `streamcli export`).

The exported graph is one streaming step, `WctcModel.forward_chunk`:

  inputs   x            (N, T, 80)      float32  T new 10 ms feature frames, T a multiple of 5
           cache_key    (N, L, O/5, D)  float32  per-layer attention keys of the last O/5 encoder frames
           cache_value  (N, L, O/5, D)  float32  per-layer attention values of the same frames
           cache_conv   (N, L, D, K-1)  float32  per-layer left context of the causal depthwise conv
           cache_valid  (N, 1)          float32  how many of the O/5 cached frames are real (0 at start)
  outputs  logits       (N, T/5*u, V)   float32  CTC logits (blank id 0); u = ctc_upsample CTC frames
                                                 per encoder frame (metadata; 1 or 2)
           new_cache_key, new_cache_value, new_cache_conv, new_cache_valid  (shapes as their inputs)

N, T and O/5 are dynamic, so one file serves any window/overlap: the overlap is read from the cache
length, the hop from T. The full-context baseline is the same file called with every frame so far as
`x` and 0-length key/value caches.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import onnx
import torch
from torch import nn

from streamcli_tools.train.wctc_torch import SUBSAMPLING, WctcModel, check_window, count_parameters

CACHE_NAMES = ("cache_key", "cache_value", "cache_conv", "cache_valid")
ENCODER_FILE = "encoder.onnx"
ENCODER_INT8_FILE = "encoder.int8.onnx"
FRAME_SHIFT_MS = 10


class _StreamingStep(nn.Module):
    def __init__(self, model: WctcModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x: torch.Tensor,
        cache_key: torch.Tensor,
        cache_value: torch.Tensor,
        cache_conv: torch.Tensor,
        cache_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.model.forward_chunk(x, cache_key, cache_value, cache_conv, cache_valid)


def cache_shapes(model: WctcModel) -> dict[str, list[int | str]]:
    """Initial cache shapes: "N" = batch, "overlap_frames/5" = cache length in encoder frames."""
    cfg = model.cfg
    o = f"overlap_frames/{SUBSAMPLING}"
    return {
        "cache_key": ["N", cfg.num_layers, o, cfg.d_model],
        "cache_value": ["N", cfg.num_layers, o, cfg.d_model],
        "cache_conv": ["N", cfg.num_layers, cfg.d_model, cfg.conv_kernel - 1],
        "cache_valid": ["N", 1],
    }


def wctc_metadata(
    *,
    model_name: str,
    window_frames: int,
    overlap_frames: int,
    subsampling: int,
    feature_dim: int,
    vocab_size: int,
    num_layers: int,
    d_model: int,
    num_heads: int,
    max_rel_distance: int,
    num_parameters: int,
    cache_shapes: dict[str, list[int | str]],
) -> dict[str, str]:
    """The metadata every wctc export writes: what streamcli.families.wctc reads to run the file
    (W/O defaults, frame geometry, vocabulary, cache names and shapes). Both exports add their own."""
    return {
        "model_type": "wctc",
        "model_name": model_name,
        "window_frames": str(window_frames),
        "overlap_frames": str(overlap_frames),
        "frame_shift_ms": str(FRAME_SHIFT_MS),
        "feature_dim": str(feature_dim),
        "subsampling": str(subsampling),
        "vocab_size": str(vocab_size),
        "blank_id": "0",
        "num_layers": str(num_layers),
        "d_model": str(d_model),
        "num_heads": str(num_heads),
        "max_rel_distance": str(max_rel_distance),
        "num_parameters": str(num_parameters),
        "cache_names": json.dumps(list(cache_shapes)),
        "cache_shapes": json.dumps(cache_shapes),
        "time_multiple": str(subsampling),
    }


def build_metadata(
    model: WctcModel, window_frames: int, overlap_frames: int, model_name: str, extra: dict[str, str] | None
) -> dict[str, str]:
    cfg = model.cfg
    shapes = cache_shapes(model)
    meta = wctc_metadata(
        model_name=model_name, window_frames=window_frames, overlap_frames=overlap_frames,
        subsampling=SUBSAMPLING, feature_dim=cfg.feature_dim, vocab_size=cfg.vocab_size,
        num_layers=cfg.num_layers, d_model=cfg.d_model, num_heads=cfg.num_heads,
        max_rel_distance=cfg.max_rel_distance, num_parameters=count_parameters(model), cache_shapes=shapes,
    )
    meta.update({"conv_kernel": str(cfg.conv_kernel), "ctc_upsample": str(cfg.ctc_upsample),
                 "cache_dtype": "float32"})
    for name, shape in shapes.items():
        meta[f"{name}_shape"] = json.dumps(shape)
    meta.update(extra or {})
    return meta


def export_onnx(
    model: WctcModel,
    path: str | os.PathLike[str],
    window_frames: int,
    overlap_frames: int,
    *,
    model_name: str = "wctc",
    extra_metadata: dict[str, str] | None = None,
    opset: int = 17,
) -> dict[str, str]:
    """Writes the streaming-step ONNX file (atomically) and returns its metadata."""
    check_window(window_frames, overlap_frames)
    model = model.eval().cpu()
    hop = window_frames - overlap_frames
    # Example shapes that differ in every dynamic dim so the tracer cannot fold one into a constant.
    example_overlap = overlap_frames if overlap_frames > 0 else 2 * SUBSAMPLING
    cache = model.initial_cache(2, example_overlap)
    cache["cache_valid"] = torch.full((2, 1), 1.0)
    x = torch.randn(2, hop if hop != example_overlap else hop + SUBSAMPLING, model.cfg.feature_dim)
    inputs = ["x", *CACHE_NAMES]
    outputs = ["logits", *(f"new_{n}" for n in CACHE_NAMES)]
    dynamic_axes: dict[str, dict[int, str]] = {
        "x": {0: "N", 1: "T"},
        "logits": {0: "N", 1: "T_out"},
        "cache_key": {0: "N", 2: "O_enc"},
        "cache_value": {0: "N", 2: "O_enc"},
        "cache_conv": {0: "N"},
        "cache_valid": {0: "N"},
        "new_cache_key": {0: "N", 2: "O_enc"},
        "new_cache_value": {0: "N", 2: "O_enc"},
        "new_cache_conv": {0: "N"},
        "new_cache_valid": {0: "N"},
    }
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        tmp_file = Path(tmp) / out_path.name
        with torch.no_grad():
            # The wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards,
            # which would otherwise switch the model's dropout back on.
            torch.onnx.export(
                _StreamingStep(model).eval(),
                (x, *cache.values()),
                str(tmp_file),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        meta = build_metadata(model, window_frames, overlap_frames, model_name, extra_metadata)
        publish_with_metadata(tmp_file, out_path, meta)
    return meta


def publish_with_metadata(tmp_file: Path, out_path: Path, meta: dict[str, str]) -> None:
    """Replaces the exported file's metadata with ``meta`` and moves it into place (atomic rename)."""
    proto = onnx.load(str(tmp_file))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_file))
    os.replace(tmp_file, out_path)


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Dynamic int8 quantization of the MatMul weights (activations stay float); metadata is kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as tmp:
        tmp_file = Path(tmp) / Path(dst).name
        quantize_dynamic(
            str(src), str(tmp_file), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
        proto = onnx.load(str(tmp_file))
        names = {p.key for p in proto.metadata_props}
        for entry in onnx.load(str(src)).metadata_props:
            if entry.key not in names:
                proto.metadata_props.add(key=entry.key, value=entry.value)
        onnx.save(proto, str(tmp_file))
        os.replace(tmp_file, dst)


def write_tokens(tokens: list[str], path: str | os.PathLike[str]) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    os.replace(tmp, path)


def export_model_dir(
    model: WctcModel,
    out_dir: str | os.PathLike[str],
    window_frames: int,
    overlap_frames: int,
    tokens: list[str],
    *,
    model_name: str | None = None,
    int8: bool = False,
    extra_metadata: dict[str, str] | None = None,
) -> dict[str, str]:
    """Writes a model folder: encoder.onnx (+ encoder.int8.onnx), tokens.txt. Returns the metadata."""
    if len(tokens) != model.cfg.vocab_size:
        raise ValueError(f"{len(tokens)} tokens but the model has vocab_size {model.cfg.vocab_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = model_name or out.resolve().name
    meta = export_onnx(
        model,
        out / ENCODER_FILE,
        window_frames,
        overlap_frames,
        model_name=name,
        extra_metadata=extra_metadata,
    )
    if int8:
        quantize_int8(out / ENCODER_FILE, out / ENCODER_INT8_FILE)
    write_tokens(tokens, out / "tokens.txt")
    return meta


def run_export(
    out_dir: str,
    window_frames: int,
    overlap_frames: int,
    checkpoint: str | None,
    *,
    random_init: bool = False,
    int8: bool = False,
    seed: int = 0,
) -> dict[str, str]:
    """`streamcli export` body: checkpoint (from scripts/train.py) -> model folder."""
    from streamcli_tools.train.wctc_torch import WctcConfig, char_tokens, load_checkpoint

    check_window(window_frames, overlap_frames)
    if checkpoint is None and not random_init:
        raise ValueError("give --checkpoint PATH (a scripts/train.py checkpoint), or --random-init")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ValueError(f"checkpoint not found: {checkpoint}")
        model, ckpt = load_checkpoint(checkpoint)
        tokens = ckpt.get("tokens")
        if tokens is None:
            raise ValueError(f"{checkpoint} holds no token table (not a scripts/train.py checkpoint?)")
    else:
        torch.manual_seed(seed)
        tokens = char_tokens()
        model = WctcModel(WctcConfig(vocab_size=len(tokens)))
    return export_model_dir(model, out_dir, window_frames, overlap_frames, tokens, int8=int8)
