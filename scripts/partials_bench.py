#!/usr/bin/env python3
"""What a viewer sees while someone speaks: settle latency, shown WER, revisions, CPU.

Builds a file of consecutive dev utterances (LibriSpeech rows of dev.tsv, 0.6 s of silence between
them, up to --seconds) with each reference word's end time from word_ends.tsv (an aligner independent
of streamcli), streams it at 1x real time and records every change of the captions view (the finals
so far + the current partial), with its wall-clock time:

- ``--streams 1``: in this process, through ``streamcli.transcribe(realtime=True)`` (the driver
  that live and ``transcribe --realtime`` use);
- ``--serve N``: N clients of a fresh ``streamcli serve`` (each a different stretch of dev.tsv), 0.2 s
  messages at 1x, the view rebuilt from the answers (Vosk ``partial`` / ``result``).

Reported (pooled over the streams):
- settle latency: for each reference word, from its end in the audio to the first view from which on
  it is shown correctly in every later view (aligned word by word), p50 / p90; words never settled
  are counted;
- shown WER: the view at the moment the audio ends (before any endpoint or flush) against the
  reference;
- revisions: words removed or replaced from one view to the next, as a share of the words shown;
- final WER: the last view (every final) against the reference;
- CPU seconds per audio second (this process, or the server's).

    python scripts/partials_bench.py --streams 1 --seconds 120 --json partials.json [--no-refine]
    python scripts/partials_bench.py --serve 4 --seconds 120
    python scripts/partials_bench.py --streams 1 --plot settle.png
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import difflib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamcli.audio import read_audio
from streamcli.metrics import corpus_error_rates, normalize_transcript

REPO = Path(__file__).resolve().parent.parent
DEV_TSV = REPO.parent / "shared" / "data" / "dev" / "dev.tsv"
GAP_S = 0.6
MESSAGE_S = 0.2
SPOKEN_SLACK_S = 0.1  # the aligner's word ends are to the 10 ms; a view may come just at the end


@dataclass
class Clip:
    audio: np.ndarray
    words: list[str]  # normalised reference words
    ends_s: list[float]  # each word's end in the clip


def build_clip(manifest: Path, seconds: float, skip_rows: int = 0) -> Clip:
    ends: dict[str, list[tuple[int, float]]] = {}
    with open(manifest.parent / "word_ends.tsv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            ends.setdefault(r["id"], []).append((int(r["index"]), float(r["end_s"])))
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["path"].startswith("librispeech")]
    parts, words, word_ends, total = [], [], [], 0.0
    for r in rows[skip_rows:]:
        if total >= seconds:
            break
        audio, _ = read_audio(manifest.parent / r["path"], target_rate=16000)
        ref = normalize_transcript(r["transcript"]).split()
        times = [t for _, t in sorted(ends.get(r["id"], []))]
        if len(times) != len(ref):
            continue  # the aligner's words must be the reference's words
        parts += [audio, np.zeros(int(GAP_S * 16000), np.float32)]
        words += ref
        word_ends += [total + t for t in times]
        total += audio.size / 16000 + GAP_S
    return Clip(np.concatenate(parts), words, word_ends)


def score(clip: Clip, views: list[tuple[float, str]], audio_end_s: float) -> dict:
    """Settle latency per reference word, shown WER at the audio's end, revisions (see the docstring)."""
    ref = clip.words
    correct_since: list[float | None] = [None] * len(ref)
    shown_at_end = ""
    previous: list[str] = []
    revised = added = 0
    for t, text in views:
        hyp = normalize_transcript(text).split()
        # Only words spoken by then can be shown correctly (a common word must not match a later one).
        spoken = bisect.bisect_right(clip.ends_s, t + SPOKEN_SLACK_S)
        good = set()
        for block in difflib.SequenceMatcher(a=ref[:spoken], b=hyp, autojunk=False).get_matching_blocks():
            good.update(range(block.a, block.a + block.size))
        for i in range(len(ref)):
            if i in good:
                if correct_since[i] is None:
                    correct_since[i] = t
            else:
                correct_since[i] = None
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=previous, b=hyp, autojunk=False).get_opcodes():
            if tag in ("replace", "delete"):
                revised += i2 - i1
            if tag in ("replace", "insert"):
                added += j2 - j1
        previous = hyp
        if t <= audio_end_s:
            shown_at_end = text
    settle = [since - end for since, end in zip(correct_since, clip.ends_s, strict=True) if since is not None]
    return {
        "final_wer": corpus_error_rates([(" ".join(ref), views[-1][1] if views else "")]).wer,
        "settle_s": settle,
        "unsettled_words": sum(since is None for since in correct_since),
        "shown_at_end_wer": corpus_error_rates([(" ".join(ref), shown_at_end)]).wer,
        "revised_words": revised,
        "shown_words": added,
    }


def run_in_process(clip: Clip, threads: int, refine: bool) -> tuple[list[dict], float]:
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig
    from streamcli.transcription import transcribe

    rec = create_recognizer(RecognizerConfig(device="cpu", threads=threads))
    finals: list[str] = []
    views: list[tuple[float, str]] = []
    partial = [""]
    start = [0.0]

    def on_partial(result) -> None:  # noqa: ANN001
        partial[0] = result.text
        views.append((time.perf_counter() - start[0], " ".join([*finals, partial[0]])))

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    segments, info = transcribe(clip.audio, rec, sample_rate=16000, realtime=True, on_partial=on_partial,
                                refine=refine)
    start[0] = time.perf_counter()
    audio_end_s = clip.audio.size / 16000
    for segment in segments:
        finals.append(segment.text)
        if not refine:  # refining, the driver calls on_partial right after each final instead
            partial[0] = ""  # the first pass's partial restarts with the next utterance
            views.append((time.perf_counter() - start[0], " ".join([*finals, partial[0]])))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return [score(clip, views, audio_end_s)], cpu / audio_end_s


async def _client(url: str, clip: Clip) -> tuple[list[tuple[float, str]], float]:
    from websockets.asyncio.client import connect

    pcm = np.clip(np.round(clip.audio * 32768), -32768, 32767).astype("<i2").tobytes()
    step = int(MESSAGE_S * 16000) * 2
    views: list[tuple[float, str]] = []
    finals: list[str] = []
    async with connect(url, open_timeout=60) as ws:
        start = time.monotonic()

        async def reader() -> None:
            async for message in ws:
                data = json.loads(message)
                if data.get("text"):
                    finals.append(data["text"])
                partial = data.get("partial", " ".join(filter(None, [data.get("committed"),
                                                                     data.get("tentative")])))
                views.append((time.monotonic() - start, " ".join([*finals, partial])))

        task = asyncio.create_task(reader())
        for k, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, start + (k + 1) * MESSAGE_S - time.monotonic()))
            await ws.send(pcm[i : i + step])
        audio_end_s = time.monotonic() - start
        await ws.send('{"eof" : 1}')
        await asyncio.wait_for(task, timeout=120)
    return views, audio_end_s


def run_serve(clips: list[Clip], threads: int, refine: bool, port: int) -> tuple[list[dict], float]:
    cmd = [sys.executable, "-m", "streamcli", "serve", "--port", str(port), "--threads", str(threads),
           "--max-streams", str(len(clips)), "--refine" if refine else "--no-refine"]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        if "serving" not in server.stderr.readline():
            raise SystemExit("the server did not start")
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_s() -> float:
            fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        cpu0 = cpu_s()

        async def all_clients() -> list[tuple[list[tuple[float, str]], float]]:
            return await asyncio.gather(*(_client(f"ws://127.0.0.1:{port}/", c) for c in clips))

        runs = asyncio.run(all_clients())
        cpu = cpu_s() - cpu0
    finally:
        server.terminate()
        server.wait(timeout=60)
    audio_s = sum(c.audio.size / 16000 for c in clips)
    return [score(c, views, end) for c, (views, end) in zip(clips, runs, strict=True)], cpu / audio_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1, help="in-process streams (1)")
    ap.add_argument("--serve", type=int, default=0, help="N concurrent clients of streamcli serve instead")
    ap.add_argument("--seconds", type=float, default=120.0, help="audio per stream")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--data", type=Path, default=DEV_TSV)
    ap.add_argument("--port", type=int, default=27131)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="settle-latency distribution as a PNG (matplotlib)")
    args = ap.parse_args()
    if args.serve:
        clips, skip = [], 0
        for _ in range(args.serve):
            clips.append(build_clip(args.data, args.seconds, skip))
            skip += 40  # a different stretch of dev.tsv for each client
        scores, cpu = run_serve(clips, args.threads, args.refine, args.port)
        mode = f"serve, {args.serve} streams"
    else:
        scores, cpu = run_in_process(build_clip(args.data, args.seconds), args.threads, args.refine)
        mode = "in process, 1 stream"
    settle = np.array([x for s in scores for x in s["settle_s"]])
    shown = max(1, sum(s["shown_words"] for s in scores))
    result = {
        "mode": mode,
        "refine": args.refine,
        "seconds_per_stream": args.seconds,
        "settle_p50_s": round(float(np.percentile(settle, 50)), 3) if settle.size else None,
        "settle_p90_s": round(float(np.percentile(settle, 90)), 3) if settle.size else None,
        "unsettled_words": sum(s["unsettled_words"] for s in scores),
        "words": sum(len(s["settle_s"]) + s["unsettled_words"] for s in scores),
        "shown_at_end_wer": round(float(np.mean([s["shown_at_end_wer"] for s in scores])), 4),
        "final_wer": round(float(np.mean([s["final_wer"] for s in scores])), 4),
        "revisions": round(sum(s["revised_words"] for s in scores) / shown, 4),
        "cpu_s_per_audio_s": round(cpu, 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(settle, bins=np.arange(0, max(6.0, float(settle.max()) + 0.25), 0.25))
        ax.set_xlabel("settle latency (s): word end -> shown correctly for good")
        ax.set_ylabel("words")
        ax.set_title(f"{mode}, refine={'on' if args.refine else 'off'}")
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()
