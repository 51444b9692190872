"""Max |logits difference| of a trained checkpoint: torch streaming and the exported ONNX file, both fed
hop by hop with their caches, against the full-sequence block-masked torch reference.

    python scripts/check_exactness.py --checkpoint runs/wctc/final.pt \
        --onnx models/streamcli-wctc-en-small/encoder.onnx --audio speech.wav --windows 100:25,200:50,50:0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr
import torch
from streamcli_tools.train.wctc_torch import SUBSAMPLING, load_checkpoint

from streamcli.features import compute_features


def onnx_stream(session: ort.InferenceSession, feats: np.ndarray, cache: dict[str, np.ndarray], hop: int):
    names = [o.name for o in session.get_outputs()]
    logits = []
    for start in range(0, feats.shape[0], hop):
        outputs = session.run(None, {"x": feats[None, start : start + hop], **cache})
        out = dict(zip(names, outputs, strict=True))
        logits.append(out["logits"][0])
        cache = {name: out["new_" + name] for name in cache}
    return np.concatenate(logits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--onnx", required=True, type=Path)
    ap.add_argument("--audio", required=True, type=Path, help="any audio file (resampled to 16 kHz mono)")
    ap.add_argument("--windows", default="100:25,200:50,50:0", help="W:O pairs in 10 ms frames")
    args = ap.parse_args()
    samples, rate = sf.read(str(args.audio), dtype="float32", always_2d=True)
    samples = soxr.resample(samples.mean(axis=1), rate, 16000).astype(np.float32)
    feats = compute_features(samples, "kaldi_fbank", 16000)
    feats = feats[: feats.shape[0] // SUBSAMPLING * SUBSAMPLING]
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(feats)[None]
    print(f"{feats.shape[0]} feature frames ({feats.shape[0] / 100:.1f} s)")
    for pair in args.windows.split(","):
        window, overlap = (int(v) for v in pair.split(":"))
        with torch.no_grad():
            reference = model.forward_full(x, window, overlap).numpy()[0]
            streamed = model.stream(x, window, overlap).numpy()[0]
        cache = {k: v.numpy() for k, v in model.initial_cache(1, overlap).items()}
        onnx = onnx_stream(session, feats, cache, window - overlap)
        print(
            f"W={window} O={overlap}: torch streaming {np.abs(streamed - reference).max():.2e}, "
            f"onnx streaming {np.abs(onnx - reference).max():.2e} (max |difference| of logits)"
        )


if __name__ == "__main__":
    main()
