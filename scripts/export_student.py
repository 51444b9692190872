#!/usr/bin/env python3
"""Export a trained streaming student (scripts/train_student.py) as a two-pass model folder.

Writes encoder.onnx (one streaming step, any even W/O; metadata names the feature type and the
Whisper tiny.en second pass) and tokens.txt, then checks the export: ONNX streaming equals the torch
model's masked full-sequence reference for several W/O (O = 0 and hop < O included).

    python scripts/export_student.py runs/student/final.pt models/streamcli-whisper-stream-en \
        --window 100 --overlap 26
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from streamcli_tools.train.export_student import export_student
from streamcli_tools.train.whisper_student import char_tokens, load_student

CHECK_WINDOWS = ((100, 26), (50, 0), (60, 40), (200, 50), (400, 100))


def check(model, path: Path) -> float:
    """Largest |ONNX streaming - torch masked reference| over CHECK_WINDOWS on 12 s of pseudo-features."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    x = torch.randn(1, 1200, 80) * 0.8 - 3.0
    worst = 0.0
    with torch.no_grad():
        for w, o in CHECK_WINDOWS:
            reference = model.head(model.encode_full(x, w, o)).numpy()
            cache = {k: v.numpy() for k, v in model.initial_cache(1, o).items()}
            outs = []
            for start in range(0, x.shape[1], w - o):
                res = session.run(None, {"x": x[:, start : start + w - o].numpy(), **cache})
                outs.append(res[0])
                cache = dict(zip(cache.keys(), res[1:-1], strict=True))
            diff = float(np.abs(np.concatenate(outs, axis=1) - reference).max())
            print(f"W={w} O={o}: max |onnx - torch reference| = {diff:.2e}")
            worst = max(worst, diff)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--overlap", type=int, default=26)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    model, ckpt = load_student(str(args.checkpoint))
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or args.out.name
    meta = export_student(
        model,
        args.out / "encoder.onnx",
        args.window,
        args.overlap,
        model_name=name,
        extra_metadata={
            "second_pass": "whisper-tiny.en",
            "training_steps": str(ckpt.get("step", "")),
            "training_hours_of_audio": f"{ckpt.get('hours', 0):.2f}",
        },
    )
    (args.out / "tokens.txt").write_text(
        "".join(f"{t} {i}\n" for i, t in enumerate(char_tokens())), encoding="utf-8"
    )
    worst = check(model, args.out / "encoder.onnx")
    print(
        f"exported {args.out / 'encoder.onnx'} ({(args.out / 'encoder.onnx').stat().st_size / 1e6:.1f} MB, "
        f"{meta['num_parameters']} parameters); worst difference {worst:.2e}"
    )
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
