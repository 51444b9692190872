#!/usr/bin/env python3
"""OpenAI Realtime transcription through `streamcli serve`: how soon the first delta arrives, and whether
the completed text equals `streamcli transcribe`'s.

A fresh server (default model and options unless given after --) is started on 127.0.0.1. For each of
the first --files utterances of dev.tsv, one client streams the file at 1x real time in 0.2 s appends
(pcm16 at --rate, resampled from 16 kHz), commits at the end and reads events until quiet. First-delta
latency = arrival of the first delta (seconds since the stream started) minus the end time of the first
reference word (word_ends.tsv, an independent aligner). The completed transcripts of the session are
compared with `streamcli transcribe` of the same file (word similarity = 1 - WER against it).

    python scripts/realtime_latency.py --files 10 --json realtime.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "dev"


def first_word_ends(path: Path) -> dict[str, float]:
    ends: dict[str, float] = {}
    with path.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["index"] == "0":
                ends[row["id"]] = float(row["end_s"])
    return ends


async def session(url: str, audio: np.ndarray, rate: int) -> tuple[list[tuple[float, dict]], float]:
    import websockets

    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    step = int(rate * 0.2) * 2
    events: list[tuple[float, dict]] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}},
                    },
                }
            )
        )
        started = time.monotonic()

        async def reader() -> None:
            while True:
                try:
                    message = await asyncio.wait_for(ws.recv(), 4.0)
                except (TimeoutError, websockets.ConnectionClosed):
                    return
                events.append((time.monotonic() - started, json.loads(message)))

        reading = asyncio.create_task(reader())
        for k, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, started + k * 0.2 - time.monotonic()))
            await ws.send(
                json.dumps(
                    {
                        "type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm[i : i + step]).decode(),
                    }
                )
            )
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await reading
    return events, started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--rate", type=int, default=24000)
    ap.add_argument("--port", type=int, default=27124)
    ap.add_argument("--json", type=Path)
    ap.add_argument("serve_args", nargs="*", help="extra `streamcli serve` options (after --)")
    args = ap.parse_args()

    from streamcli.families import create_recognizer
    from streamcli.metrics import corpus_error_rates, normalize_transcript
    from streamcli.recognizer import RecognizerConfig
    from streamcli.transcription import transcribe

    with (DEV / "dev.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[: args.files]
    ends = first_word_ends(DEV / "word_ends.tsv")
    recognizer = create_recognizer(RecognizerConfig(threads=2))
    reference = [" ".join(s.text for s in transcribe(str(DEV / r["path"]), recognizer)[0]) for r in rows]
    del recognizer
    server = subprocess.Popen(
        [sys.executable, "-m", "streamcli", "serve", "--port", str(args.port), *args.serve_args],
        stderr=subprocess.PIPE,
        text=True,
    )
    results = []
    try:
        line = server.stderr.readline()
        if "serving" not in line:
            raise SystemExit(f"server did not start: {line.strip()}")
        url = f"ws://127.0.0.1:{args.port}/v1/realtime?intent=transcription"
        for row, ref in zip(rows, reference, strict=True):
            audio, rate = sf.read(str(DEV / row["path"]), dtype="float32")
            if args.rate != rate:
                audio = soxr.resample(audio, rate, args.rate)
            events, _ = asyncio.run(session(url, audio, args.rate))
            deltas = [t for t, e in events if e["type"].endswith("transcription.delta")]
            items: dict[str, dict[str, str]] = {}
            for _, e in events:
                item = items.setdefault(e.get("item_id") or "", {"deltas": "", "completed": ""})
                if e["type"].endswith("transcription.delta"):
                    item["deltas"] += e["delta"]
                elif e["type"].endswith("transcription.completed"):
                    item["completed"] = e["transcript"]
            done_items = [i for k, i in items.items() if k and i["completed"]]
            revised = sum(
                not normalize_transcript(i["completed"]).startswith(normalize_transcript(i["deltas"]))
                for i in done_items
            )
            completed = " ".join(
                e["transcript"]
                for _, e in events
                if e["type"].endswith("transcription.completed") and e["transcript"]
            )
            first = deltas[0] - ends[row["id"]] if deltas else None
            results.append(
                {
                    "id": row["id"],
                    "first_delta_after_word_s": first,
                    "deltas": len(deltas),
                    "completed": completed,
                    "transcribe": ref,
                    "errors": sum(e["type"] == "error" for _, e in events),
                    "items": len(done_items),
                    "items_deltas_revised": revised,
                }
            )
            shown = f"{first:.2f} s" if first is not None else "none"
            print(f"{row['id']}: first delta {shown} after the first word; {len(deltas)} deltas", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    firsts = sorted(
        r["first_delta_after_word_s"] for r in results if r["first_delta_after_word_s"] is not None
    )
    rates = corpus_error_rates((r["transcribe"], r["completed"]) for r in results)
    summary = {
        "files": len(results),
        "first_delta_p50_s": float(np.percentile(firsts, 50)) if firsts else None,
        "first_delta_p90_s": float(np.percentile(firsts, 90)) if firsts else None,
        "first_delta_max_s": max(firsts) if firsts else None,
        "within_1_5_s": sum(f <= 1.5 for f in firsts),
        "completed_equal_to_transcribe": sum(r["completed"] == r["transcribe"] for r in results),
        "completed_vs_transcribe_wer": rates.wer,
        "error_events": sum(r["errors"] for r in results),
        "items": sum(r["items"] for r in results),
        "items_whose_deltas_the_final_revised": sum(r["items_deltas_revised"] for r in results),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "files": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
