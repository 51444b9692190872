#!/usr/bin/env python3
"""WER of a model folder on TSV manifests, streamed through the real runtime (create_recognizer).

Every file goes through Stream.accept_waveform / decode / input_finished exactly as `streamcli
transcribe` does (several files batched per encoder call with decode_streams, which the tests show
gives the same tokens as one stream at a time). Text is normalised on both sides: lower case, only
a-z and apostrophes, single spaces.

  python scripts/wctc_eval.py --model models/streamcli-wctc-en-small \
      ../shared/data/dev/dev.tsv /work/data/synth/heldout.tsv [--window 100 --overlap 25] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streamcli.recognizer import RecognizerConfig, create_recognizer  # noqa: E402


def normalize(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    return re.sub(r"[^a-z' ]+", " ", text).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def read_manifest(path: Path) -> list[tuple[str, Path, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    col = {name: i for i, name in enumerate(lines[0].split("\t"))}
    rows = []
    for line in lines[1:]:
        if line.strip():
            f = line.split("\t")
            audio = Path(f[col["path"]])
            rows.append(
                (
                    f[col.get("id", 0)],
                    audio if audio.is_absolute() else path.parent / audio,
                    f[col["transcript"]],
                )
            )
    return rows


def evaluate(rec, rows: list[tuple[str, Path, str]], batch: int) -> dict:
    errors = ref_words = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    examples = []
    for i in range(0, len(rows), batch):
        group = rows[i : i + batch]
        streams = []
        for _, audio_path, _ in group:
            samples, sr = sf.read(str(audio_path), dtype="float32", always_2d=True)
            samples = samples.mean(axis=1)
            audio_s += samples.size / sr
            s = rec.create_stream()
            s.accept_waveform(int(sr), np.ascontiguousarray(samples))
            s.input_finished()
            streams.append(s)
        while any(s.is_ready() for s in streams):
            rec.decode_streams(streams)
        for (uid, _, ref), s in zip(group, streams, strict=True):
            hyp = s.result().text
            r, h = normalize(ref), normalize(hyp)
            errors += edit_distance(r, h)
            ref_words += len(r)
            if len(examples) < 3:
                examples.append({"id": uid, "ref": " ".join(r), "hyp": " ".join(h)})
    elapsed = time.perf_counter() - t0
    return {
        "utterances": len(rows),
        "audio_hours": round(audio_s / 3600, 4),
        "ref_words": ref_words,
        "word_errors": errors,
        "wer": round(errors / max(1, ref_words), 4),
        "rtf": round(elapsed / max(audio_s, 1e-9), 4),
        "examples": examples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifests", nargs="+", type=Path)
    ap.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="streams per encoder call")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    rec = create_recognizer(
        RecognizerConfig(
            model=args.model,
            device="cpu",
            threads=args.threads,
            window_frames=args.window,
            overlap_frames=args.overlap,
        )
    )
    info = rec.info
    results = {
        "model": str(info.path),
        "window_frames": info.window_frames,
        "overlap_frames": info.overlap_frames,
        "files": list(info.files),
        "sets": {},
    }
    for manifest in args.manifests:
        res = evaluate(rec, read_manifest(manifest), args.batch)
        results["sets"][str(manifest)] = res
        print(
            f"{manifest}: WER {res['wer'] * 100:.1f}% ({res['word_errors']}/{res['ref_words']} words, "
            f"{res['utterances']} utterances, {res['audio_hours']:.2f} h, RTF {res['rtf']:.3f}, "
            f"W={info.window_frames} O={info.overlap_frames})",
            flush=True,
        )
        for ex in res["examples"]:
            print(f"  ref: {ex['ref']}\n  hyp: {ex['hyp']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
