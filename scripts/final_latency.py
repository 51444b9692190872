#!/usr/bin/env python3
"""Endpoint decision -> final text, with real endpoints, for 1 or more real-time streams in one process.

Builds a file of consecutive LibriSpeech utterances of dev.tsv with 1.5 s of silence between them (so
endpoint rule 2 closes each one, as a speaker's pause would), then streams it at 1x real time through
the default two-pass model, each stream from a different place in the file, batched per hop as
``streamcli serve`` runs them (``streamcli.bench.measure_second_pass``, the code ``streamcli bench``
reports from). Per final: the time from the endpoint decision to its text being ready.

    python scripts/final_latency.py --streams 1 --seconds 180
    python scripts/final_latency.py --streams 1,8,50 --seconds 60 --no-refine
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from streamcli.audio import read_audio

REPO = Path(__file__).resolve().parent.parent
DEV_TSV = REPO.parent / "shared" / "data" / "dev" / "dev.tsv"
PAUSE_S = 1.5


def build_audio(manifest: Path, seconds: float) -> np.ndarray:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("librispeech")]
    parts: list[np.ndarray] = []
    total = 0
    for r in rows[60:]:  # past the test-other rows the other scripts start with
        audio, _ = read_audio(manifest.parent / r["path"], target_rate=16000)
        parts += [audio, np.zeros(int(PAUSE_S * 16000), np.float32)]
        total += audio.size + int(PAUSE_S * 16000)
        if total >= seconds * 16000:
            break
    return np.concatenate(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1", help="comma-separated stream counts")
    ap.add_argument("--seconds", type=float, default=180.0, help="audio per stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--data", type=Path, default=DEV_TSV)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from streamcli.bench.accuracy import measure_second_pass
    from streamcli.bench.audio import LoopedAudio
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig

    audio = LoopedAudio(build_audio(args.data, args.seconds), f"dev utterances, {PAUSE_S:g} s pauses")
    recognizer = create_recognizer(RecognizerConfig(device="cpu", threads=args.threads))
    results = []
    for streams in (int(n) for n in args.streams.split(",")):
        result = measure_second_pass(recognizer, audio, args.seconds, streams, refine=args.refine)
        if result is None:
            raise SystemExit("no finals were measured")
        results.append(asdict(result))
        print(f"{streams} stream(s), refine {args.refine}: {result.segments} finals, endpoint -> final p50 "
              f"{result.final_ms_p50:.0f} / p95 {result.final_ms_p95:.0f} / max {result.final_ms_max:.0f} "
              f"ms; second pass {result.ms_per_audio_s:.0f} ms per audio s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
