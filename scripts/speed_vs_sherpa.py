#!/usr/bin/env python3
"""Whole-process speed: `streamcli transcribe` against sherpa-onnx's Python API on the same file.

    python scripts/speed_vs_sherpa.py [--seconds 300] [--threads 1] [--pairs 5] [--model DIR]

Builds the random-weight test zipformer (unless --model), writes the first --seconds of the dev set as
one 16 kHz WAV, then runs the two commands in turn (A B A B ..., one warm-up each) as separate
processes and prints each one's median wall and CPU seconds and the median of the pairwise ratios
A/B (< 1: streamcli is faster). Both write their text to a file; the two texts are compared, so a
speed-up that changed the output would show. The sherpa-onnx side is this script with --sherpa-side.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEV_TSV = SHARED / "data" / "dev" / "dev.tsv"
RATE = 16000


def sherpa_side(model_dir: str, wav: str, threads: int, out: str) -> int:
    """What a sherpa-onnx user writes: load the transducer, feed the file, decode, write the text."""
    import sherpa_onnx

    rec = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=f"{model_dir}/tokens.txt", encoder=f"{model_dir}/encoder.onnx",
        decoder=f"{model_dir}/decoder.onnx", joiner=f"{model_dir}/joiner.onnx", num_threads=threads,
        sample_rate=RATE, feature_dim=80, decoding_method="greedy_search", provider="cpu",
    )
    samples, rate = sf.read(wav, dtype="float32")
    stream = rec.create_stream()
    stream.accept_waveform(rate, samples)
    stream.accept_waveform(rate, np.zeros(int(0.66 * rate), np.float32))  # the tail streamcli pads
    stream.input_finished()
    while rec.is_ready(stream):
        rec.decode_stream(stream)
    Path(out).write_text(rec.get_result(stream) + "\n", encoding="utf-8")
    return 0


def write_dev_audio(out: Path, seconds: float) -> None:
    from streamcli.audio import read_audio

    with open(DEV_TSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    parts, total = [], 0
    for row in rows:
        samples, _ = read_audio(DEV_TSV.parent / row["path"], target_rate=RATE)
        parts.append(samples)
        total += samples.size
        if total >= seconds * RATE:
            break
    sf.write(out, np.concatenate(parts)[: int(seconds * RATE)], RATE, subtype="PCM_16")


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--sherpa-side", nargs=4, metavar=("MODEL", "WAV", "THREADS", "OUT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sherpa_side:
        model_dir, wav, threads, out = args.sherpa_side
        return sherpa_side(model_dir, wav, int(threads), out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from streamcli_tools.devtools.zipformer_maker import make_test_zipformer

            model = make_test_zipformer(work / "test-zipformer", seed=0)
        wav = work / "audio.wav"
        write_dev_audio(wav, args.seconds)
        ours_out, theirs_out = work / "streamcli.txt", work / "sherpa.txt"
        streamcli = [sys.executable, "-m", "streamcli", "transcribe", str(wav), "--model", str(model),
                     "--threads", str(args.threads), "--device", "cpu", "-o", str(ours_out)]
        sherpa = [sys.executable, os.path.abspath(__file__), "--sherpa-side", str(model), str(wav),
                  str(args.threads), str(theirs_out)]
        timed(streamcli), timed(sherpa)  # warm-up: page cache, first-run allocations
        ours, theirs = [], []
        for _ in range(args.pairs):
            ours.append(timed(streamcli))
            theirs.append(timed(sherpa))
        # streamcli writes a line per endpoint, sherpa-onnx one line: compare the characters.
        same = "".join(ours_out.read_text(encoding="utf-8").split()) == "".join(
            theirs_out.read_text(encoding="utf-8").split())
    ratios = [a[0] / b[0] for a, b in zip(ours, theirs, strict=True)]
    print(f"{args.seconds:g} s of dev audio, {args.threads} thread(s), {args.pairs} pairs, "
          f"model {args.model or 'test zipformer'}")
    for name, runs in (("streamcli transcribe", ours), ("sherpa-onnx (Python API)", theirs)):
        print(f"{name}: wall median {statistics.median(r[0] for r in runs):.2f} s, "
              f"CPU median {statistics.median(r[1] for r in runs):.2f} s")
    print(f"ratio streamcli/sherpa-onnx (wall, median of pairs): {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); same words: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
