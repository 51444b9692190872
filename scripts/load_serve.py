#!/usr/bin/env python3
"""Load test of `streamcli serve`: N concurrent real-time WebSocket clients, and N separate processes.

For each N in --clients, a fresh `streamcli serve` process is started on 127.0.0.1; N clients each
stream a different stretch of dev speech (--seconds of consecutive utterances) at 1x real time in 0.2 s
messages, as a microphone would, then send eof. Finals: the time from eof to the final result
(p50/p95, and how many within 1 s), and each stream's finals compared with the same audio alone through
the library with the server's options (word similarity = 1 - WER).
Per message the client records send and answer time; the latency of a message that completes
a window (the audio sent crosses a multiple of the hop) is its answer time minus its send time, i.e.
the delay beyond T_wait. A stream keeps up when every answer came and its p95 of those latencies is
under the hop. Server CPU seconds and peak RSS come from /proc.

--compare-processes also runs N `streamcli live --input-file F --input-speed 1` processes at once
(one model and one encoder call per stream, no batching) and reports how many kept up (their own
--stats-json: latency p95 under the hop and no dropped audio) and their total CPU and RSS.

    python scripts/load_serve.py --clients 1,8,32,64 --seconds 20 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from streamcli.audio import read_audio

MESSAGE_S = 0.2
GAP_S = 0.6  # silence between utterances in a client's clip (no endpoint: rule 2 needs 1.2 s)


def dev_files(manifest: Path, seconds: float, count: int) -> list[np.ndarray]:
    """``count`` clips of ``seconds`` each: client k gets consecutive dev utterances from row k on, 0.6 s
    of silence between them (real speech throughout; a looped file would repeat itself, and Whisper's
    repetition guard rightly drops a verbatim repeat, which made "the same audio alone" ill-defined)."""
    with open(manifest, newline="", encoding="utf-8") as f:
        paths = [manifest.parent / r["path"] for r in csv.DictReader(f, delimiter="\t")]
    utterances: dict[int, np.ndarray] = {}
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    want = int(seconds * 16000)
    out = []
    for k in range(count):
        parts, total, row = [], 0, k
        while total < want:
            if row % len(paths) not in utterances:
                utterances[row % len(paths)] = read_audio(paths[row % len(paths)], target_rate=16000)[0]
            parts += [utterances[row % len(paths)], gap]
            total += utterances[row % len(paths)].size + gap.size
            row += 1
        out.append(np.concatenate(parts)[:want])
    return out


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of a process and its threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cpu, hwm


async def client(url: str, audio: np.ndarray, hop_s: float, delay_s: float = 0.0) -> dict:
    """One real-time stream; a stream the server refuses (1013 at capacity) is reported as refused."""
    from websockets.exceptions import ConnectionClosed

    await asyncio.sleep(delay_s)
    try:
        return await _stream(url, audio, hop_s)
    except ConnectionClosed as e:
        if e.rcvd is not None and e.rcvd.code == 1013:
            return {"refused": True, "reason": e.rcvd.reason}
        raise


async def _stream(url: str, audio: np.ndarray, hop_s: float) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    step = int(MESSAGE_S * 16000) * 2
    sends: list[float] = []
    answers: list[float] = []
    finals: list[str] = []  # the text of every result message (finals), the last one after eof
    refused: list[str] = []
    async with connect(url, open_timeout=60) as ws:

        async def reader() -> None:
            # One answer per message; the server closes after the final result.
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    data = json.loads(message)
                    if "error" in data:
                        refused.append(data["error"])
                        return
                    answers.append(time.monotonic())
                    if "text" in data and data["text"]:
                        finals.append(data["text"])

        task = asyncio.create_task(reader())
        start = time.monotonic()
        for k, i in enumerate(range(0, len(pcm), step)):
            due = start + k * MESSAGE_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sends.append(time.monotonic())
            await ws.send(pcm[i : i + step])
        await ws.send('{"eof" : 1}')
        sends.append(time.monotonic())
        try:
            await asyncio.wait_for(task, timeout=60)
        except TimeoutError:
            task.cancel()
    if refused:
        return {"refused": True, "reason": refused[0]}
    lat = []
    hop_bytes = hop_s * 16000 * 2
    for k in range(min(len(sends) - 1, len(answers))):
        sent_before, sent_after = k * step, (k + 1) * step
        if int(sent_after // hop_bytes) > int(sent_before // hop_bytes):  # this message completes a window
            lat.append((answers[k] - sends[k]) * 1000)
    complete = len(answers) >= len(sends)
    p95 = float(np.percentile(lat, 95)) if lat else float("inf")
    eof_to_final_ms = (answers[-1] - sends[-1]) * 1000 if complete else None
    return {"latencies_ms": lat, "complete": complete, "keeps_up": complete and p95 < hop_s * 1000,
            "eof_to_final_ms": eof_to_final_ms, "text": " ".join(finals)}


def word_similarity(a: str, b: str) -> float:
    """1 - word error rate of ``b`` against ``a`` after normalisation (1.0: the same words)."""
    from streamcli.metrics import corpus_error_rates

    if not a.split() and not b.split():
        return 1.0
    return max(0.0, 1.0 - corpus_error_rates([(a, b)]).wer)


def texts_alone(files: list[np.ndarray], serve_args: list[str], threads: int) -> list[str]:
    """Each file alone through the library with the server's options: what every stream should get.
    With refinements (a two-pass model's default) that is the finals of one stream that keeps up
    (every refinement in time); without, the file's transcription."""
    from streamcli.bench.accuracy import refined_finals
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig
    from streamcli.transcription import transcribe

    rescore = False if "--no-rescore" in serve_args else None
    rec = create_recognizer(RecognizerConfig(device="cpu", threads=threads, rescore=rescore))
    if rec.finals_worker() is not None and "--no-refine" not in serve_args:
        return [" ".join(seg.text for seg in refined_finals(rec, f, block_s=MESSAGE_S)) for f in files]
    return [" ".join(seg.text for seg in transcribe(f, rec, sample_rate=16000)[0]) for f in files]


def run_server_load(
    n: int, files: list[np.ndarray], args: argparse.Namespace, hop_s: float, reference: list[str]
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "streamcli",
        "serve",
        "--port",
        str(args.port),
        "--max-streams",
        str(max(n, 1)),
        "--threads",
        str(args.threads),
        *args.serve_args,
    ]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        if "serving" not in line:
            raise SystemExit(f"server did not start: {line.strip()}")
        cpu0, _ = proc_stats(server.pid)
        url = f"ws://127.0.0.1:{args.port}/"

        async def all_clients() -> list[dict]:
            # --stagger S spreads the starts (so the ends) over S seconds; 0: all eofs at once.
            return await asyncio.gather(
                *(client(url, files[i % len(files)], hop_s, args.stagger * i / max(1, n)) for i in range(n))
            )

        t0 = time.monotonic()
        results = asyncio.run(all_clients())
        wall = time.monotonic() - t0
        cpu1, rss = proc_stats(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    refused = [r for r in results if r.get("refused")]
    served = [(i, r) for i, r in enumerate(results) if not r.get("refused")]
    lat = [x for _, r in served for x in r["latencies_ms"]]
    eof = [r["eof_to_final_ms"] if r["eof_to_final_ms"] is not None else float("inf") for _, r in served]
    similar = [word_similarity(reference[i % len(reference)], r["text"]) for i, r in served] or [0.0]
    eof = eof or [float("inf")]
    return {
        "clients": n,
        "mode": "serve (batched)",
        "refused": len(refused),
        "refused_reason": refused[0]["reason"] if refused else None,
        "keeping_up": sum(r["keeps_up"] for _, r in served),
        "eof_to_final_p50_ms": round(float(np.percentile(eof, 50)), 1),
        "eof_to_final_p95_ms": round(float(np.percentile(eof, 95)), 1),
        "finals_within_1s": sum(e <= 1000 for e in eof),
        "text_similarity_min": round(min(similar), 3),
        "texts_at_least_0.95": sum(x >= 0.95 for x in similar),
        "latency_beyond_wait_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
        "latency_beyond_wait_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
        "server_cpu_s": round(cpu1 - cpu0, 1),
        "server_cpu_per_audio_s": round((cpu1 - cpu0) / (n * args.seconds), 4),
        "server_peak_rss_mb": round(rss, 0),
        "wall_s": round(wall, 1),
    }


def run_process_load(n: int, files: list[np.ndarray], args: argparse.Namespace, hop_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp())
    procs = []
    for i in range(n):
        wav = tmp / f"in{i}.wav"
        sf.write(wav, files[i % len(files)], 16000)
        cmd = [
            sys.executable,
            "-m",
            "streamcli",
            "live",
            "--input-file",
            str(wav),
            "--input-speed",
            "1",
            "--threads",
            "1",
            "--stats-json",
            str(tmp / f"s{i}.json"),
            *args.serve_args,
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    t0 = time.monotonic()
    usage = []
    for p in procs:
        _, status, ru = os.wait4(p.pid, 0)
        usage.append(ru)
    wall = time.monotonic() - t0
    kept = 0
    p95s = []
    for i in range(n):
        f = tmp / f"s{i}.json"
        if f.is_file():
            s = json.loads(f.read_text())
            p95 = s.get("latency_p95_ms")
            p95s.append(p95 or 0)
            kept += int(
                s.get("dropped_blocks", 0) == 0 and p95 is not None and p95 < hop_s * 1000 + 1000 * MESSAGE_S
            )
    return {
        "clients": n,
        "mode": "one process per stream",
        "keeping_up": kept,
        "latency_p95_ms_median_of_processes": round(float(np.median(p95s)), 1) if p95s else None,
        "cpu_s": round(sum(r.ru_utime + r.ru_stime for r in usage), 1),
        "peak_rss_mb_sum": round(sum(r.ru_maxrss for r in usage) / 1024, 0),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,8,32,64")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/dev/dev.tsv"
    )
    ap.add_argument("--port", type=int, default=27123)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--hop-ms", type=float, default=None, help="the model's hop (default: read from the model)"
    )
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="spread the client starts over this many seconds (0: every eof at once)")
    ap.add_argument("--compare-processes", default="", help="N values for the one-process-per-stream run")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "serve_args", nargs="*", help="extra options for serve/live, after --, e.g. -- --no-rescore"
    )
    args = ap.parse_args()
    if args.hop_ms is None:
        from streamcli.families import create_recognizer
        from streamcli.recognizer import RecognizerConfig

        info = create_recognizer(RecognizerConfig(device="cpu", rescore=False)).info
        args.hop_ms = info.shift_frames * info.frame_shift_ms
    hop_s = args.hop_ms / 1000
    counts = [int(v) for v in f"{args.clients},{args.compare_processes}".split(",") if v]
    files = dev_files(args.data, args.seconds, max(counts))
    rows = []
    reference = texts_alone(files[: max(int(v) for v in args.clients.split(",") if v)], args.serve_args,
                            args.threads)
    for n in [int(v) for v in args.clients.split(",") if v]:
        row = run_server_load(n, files, args, hop_s, reference)
        print(json.dumps(row), flush=True)
        rows.append(row)
    for n in [int(v) for v in args.compare_processes.split(",") if v]:
        row = run_process_load(n, files, args, hop_s)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(
            json.dumps({"hop_ms": args.hop_ms, "seconds": args.seconds, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
