#!/usr/bin/env python3
"""Per-window encoder time of a wctc model at stream position ~10 s vs ~600 s (or any positions).

One long stream (speech files from a manifest, concatenated and repeated until --seconds) goes through
the runtime's Stream; every encoder call's time is kept by the recognizer (Stream.chunk_times_ms).
The windows whose start lies within +-5 s of each requested position are summarised (median, p90),
measured in the same run so machine noise affects both alike.

  python scripts/wctc_timing.py --model models/streamcli-wctc-en-small --seconds 610 --positions 10,600
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import soundfile as sf

from streamcli.families import create_recognizer
from streamcli.recognizer import RecognizerConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=610.0)
    ap.add_argument("--positions", default="10,600", help="stream positions in seconds")
    ap.add_argument(
        "--audio-tsv", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dev/dev.tsv"
    )
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
    lines = args.audio_tsv.read_text(encoding="utf-8").splitlines()[1:]
    pieces, total = [], 0
    need = int(args.seconds * 16000)
    while total < need:
        for line in lines:
            path = Path(line.split("\t")[1])
            path = path if path.is_absolute() else args.audio_tsv.parent / path
            samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
            assert sr == 16000, "the timing script expects 16 kHz audio"
            pieces.append(samples.mean(axis=1))
            total += pieces[-1].size
            if total >= need:
                break
    audio = np.concatenate(pieces)[:need]
    s = rec.create_stream()
    block = 1600  # 100 ms blocks, as a live source would deliver them
    for start in range(0, audio.size, block):
        s.accept_waveform(16000, audio[start : start + block])
        s.decode_ready()
    hop_s = rec.info.shift_frames * rec.info.frame_shift_ms / 1000
    times = s.chunk_times_ms
    info = rec.info
    print(
        f"model {info.name}: W={info.window_frames} O={info.overlap_frames} hop={hop_s * 1000:.0f} ms, "
        f"{info.provider}, {info.threads} thread(s), {len(times)} windows over {audio.size / 16000:.0f} s"
    )
    for pos in (float(p) for p in args.positions.split(",")):
        sel = [t for i, t in enumerate(times) if abs(i * hop_s - pos) <= 5.0]
        if not sel:
            print(f"position {pos:g} s: no windows (stream too short)")
            continue
        sel.sort()
        p90 = sel[min(len(sel) - 1, int(0.9 * len(sel)))]
        print(
            f"position {pos:6.0f} s: median {statistics.median(sel):.2f} ms, p90 {p90:.2f} ms "
            f"over {len(sel)} windows"
        )


if __name__ == "__main__":
    main()
