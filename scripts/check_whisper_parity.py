#!/usr/bin/env python3
"""Token parity of our ONNX Whisper tiny.en (encoder + decoder with cached state) against ctranslate2.

For every file of a manifest: the same normalised 30 s log-mel goes to ctranslate2's
``Whisper.generate`` (greedy, its default suppression) and to our graphs (``WhisperSecondPass``
with the guards off); the token sequences are compared. Needs the test extra (ctranslate2).

    python scripts/check_whisper_parity.py --data ../shared/data/dev/dev.tsv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from streamcli.features import compute_features
from streamcli.whisper.second_pass import (
    NO_TIMESTAMPS,
    SOT,
    SecondPassConfig,
    WhisperSecondPass,
    whisper_window,
)
from streamcli.whisper.weights import package_model_dir


def mel30(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
    return whisper_window(compute_features(audio, "whisper_log10_mel"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import ctranslate2

    ref_model = ctranslate2.models.Whisper(
        str(package_model_dir()), device="cpu", compute_type="float32", intra_threads=args.threads
    )
    ours = WhisperSecondPass(device="cpu", threads=args.threads, config=SecondPassConfig(precision="float32"))
    with open(args.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    same = 0
    differ: list[str] = []
    t0 = time.perf_counter()
    for row in rows:
        mel = mel30(args.data.parent / row["path"])
        frames = ours.run_encoder([mel[0]])[0][None]
        mine = ours.decode(frames, 30.0, guards=False).token_ids
        theirs = ref_model.generate(
            ctranslate2.StorageView.from_array(mel), [[SOT, NO_TIMESTAMPS]], beam_size=1
        )[0].sequences_ids[0]
        if mine == theirs:
            same += 1
        else:
            first = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                min(len(mine), len(theirs)),
            )
            differ.append(
                f"{row['id']}: first difference at token {first} of {len(theirs)}: "
                f"ours {ours.tokenizer.decode(mine[first : first + 5])!r} vs "
                f"ctranslate2 {ours.tokenizer.decode(theirs[first : first + 5])!r}"
            )
    print(f"{same}/{len(rows)} files give identical tokens ({time.perf_counter() - t0:.0f} s)")
    for line in differ:
        print("  " + line)
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
