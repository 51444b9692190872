#!/usr/bin/env python3
"""Peak RSS of `streamcli transcribe` on a 60-minute file vs a 1-minute one (target: flat).

    python scripts/measure_memory.py [--model DIR] [--minutes 60] [--threads 1] [--json-out FILE]

Builds the long input by concatenating the dev set audio (../shared/data/dev/dev.tsv), resampled to
16 kHz mono and written block by block (the script never holds the long file in memory), plus a
1-minute file made the same way. Each run is a fresh `python -m streamcli transcribe` process; its
peak resident set size comes from os.wait4 (ru_maxrss of that child alone). Two output modes:
plain text to a pipe (streaming: nothing is kept) and `-o FILE.json` (the segments, words and tokens
of the whole file are kept until the end, as the JSON document needs them).

Without --model the random-weight test zipformer is built into a temporary folder (no real weights are
available here; the memory behaviour of the pipeline does not depend on the weights).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
RATE = 16000


def build_concatenated(out: Path, minutes: float, dev_tsv: Path) -> float:
    """Writes ``minutes`` of dev audio (looped) to ``out`` (16 kHz mono PCM_16); returns seconds."""
    from streamcli.audio import open_audio

    with open(dev_tsv, encoding="utf-8") as handle:
        paths = [dev_tsv.parent / row["path"] for row in csv.DictReader(handle, delimiter="\t")]
    target = round(minutes * 60 * RATE)
    written = 0
    with sf.SoundFile(out, "w", samplerate=RATE, channels=1, subtype="PCM_16") as sink:
        while written < target:
            for path in paths:
                with open_audio(path, target_rate=RATE, block_s=1.0) as audio:
                    for block in audio.blocks():
                        block = block[: target - written]
                        sink.write(block)
                        written += block.size
                        if written >= target:
                            break
                if written >= target:
                    break
    return written / RATE


def peak_rss_mb(command: list[str], stdout_path: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, exit code) of one child process."""
    t0 = time.perf_counter()
    with open(stdout_path, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed ({code}): {err.strip()}")
    return usage.ru_maxrss / 1024.0, elapsed, code  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="model folder (default: build the test zipformer)")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long file")
    parser.add_argument("--short-minutes", type=float, default=1.0, help="length of the short file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dev-tsv", type=Path, default=SHARED / "data" / "dev" / "dev.tsv")
    parser.add_argument("--modes", default="txt,json", help="comma list of: txt (pipe), json (-o FILE.json)")
    parser.add_argument("--json-out", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="streamcli-mem-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if model is None:
            model = tmp / "test-zipformer"
            subprocess.run(
                [sys.executable, str(REPO / "scripts" / "make_test_zipformer.py"), str(model)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        inputs = {}
        for label, minutes in (("short", args.short_minutes), ("long", args.minutes)):
            path = tmp / f"{label}.wav"
            seconds = build_concatenated(path, minutes, args.dev_tsv)
            inputs[label] = (path, seconds)
            print(
                f"{label}: {seconds / 60:.1f} min of dev audio -> {path.stat().st_size / 1e6:.0f} MB wav",
                flush=True,
            )

        results = []
        base = [sys.executable, "-m", "streamcli", "transcribe", "--model", str(model), "--device", "cpu"]
        base += ["--threads", str(args.threads)]
        for mode in args.modes.split(","):
            for label in ("short", "long"):
                path, seconds = inputs[label]
                command = [*base, str(path)]
                if mode == "json":
                    command += ["-o", str(tmp / f"{label}.json")]
                rss_mb, wall_s, _ = peak_rss_mb(command, tmp / f"{label}.{mode}.stdout")
                row = {
                    "mode": mode,
                    "input": label,
                    "audio_min": round(seconds / 60, 2),
                    "peak_rss_mb": round(rss_mb, 1),
                    "wall_s": round(wall_s, 1),
                    "rtf": round(wall_s / seconds, 3),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
        print()
        print(f"{'mode':<6}{'input':<7}{'audio min':>10}{'peak RSS MB':>13}{'wall s':>9}{'RTF':>7}")
        for r in results:
            print(
                f"{r['mode']:<6}{r['input']:<7}{r['audio_min']:>10}{r['peak_rss_mb']:>13}{r['wall_s']:>9}{r['rtf']:>7}"
            )
        for mode in args.modes.split(","):
            short = next(r for r in results if r["mode"] == mode and r["input"] == "short")
            long = next(r for r in results if r["mode"] == mode and r["input"] == "long")
            extra_mb = long["peak_rss_mb"] - short["peak_rss_mb"]
            extra_min = long["audio_min"] - short["audio_min"]
            ratio = long["peak_rss_mb"] / short["peak_rss_mb"]
            print(
                f"{mode}: long/short peak RSS = {ratio:.3f} (+{extra_mb:.1f} MB for {extra_min:.0f} more min)"
            )
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
