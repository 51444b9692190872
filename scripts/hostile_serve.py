#!/usr/bin/env python3
"""Hostile and careless clients against a fresh `streamcli serve` process (default model unless given after
--): the figures of the serve hardening tests, measured on the real server.

1. flood: one client sends 1 MiB binary messages as fast as the server takes them for --flood-s seconds,
   never reading, while a normal client streams a dev file at real time: server RSS growth (from /proc),
   whether the normal client got its final, and how much audio the flooder got in.
2. never-reading clients: --max-streams 2, two raw clients send tiny messages, never read, never close;
   seconds until a normal client is served again (idle timeout 5 s, write timeout 10 s by default).
3. SIGTERM while one client sends 40x real time and 9 stream at 1x: finals received, exit code,
   seconds from the signal to the exit.

    python scripts/hostile_serve.py --json hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT.parent / "shared/data/dev/librispeech/test-clean/1089/1089-134686-0000.flac"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(port: int, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcli", "serve", "--port", str(port), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    if "serving" not in line:
        raise SystemExit(f"server did not start: {line.strip()}")
    return proc


async def real_time(url: str, pcm: bytes, seconds: float | None = None) -> dict:
    import websockets

    answers: list[dict] = []
    end = len(pcm) if seconds is None else min(len(pcm), int(seconds * 32000))
    try:
        async with websockets.connect(url) as ws:
            for i in range(0, end, 6400):
                await ws.send(pcm[i : i + 6400])
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
                await asyncio.sleep(0.2)
            await ws.send('{"eof" : 1}')
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    except Exception as exc:  # noqa: BLE001 - a shutdown closes the connection after the final
        return {"answers": len(answers), "final": _final(answers), "closed": repr(exc)[:120]}
    return {"answers": len(answers), "final": _final(answers)}


def _final(answers: list[dict]) -> bool:
    """Whether the last answer is a result with text (the final of what was said)."""
    return bool(answers) and "result" in answers[-1] and bool(answers[-1].get("text"))


def flood(port: int, extra: list[str], flood_s: float, pcm: bytes) -> dict:
    import websockets

    proc = start(port, extra)
    url = f"ws://127.0.0.1:{port}/"
    base = rss_mb(proc.pid)
    peak = base
    sent = 0

    async def flooder(stop: asyncio.Event) -> None:
        nonlocal sent
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            block = b"\x01\x00" * (1 << 19)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.send(block), 0.5)
                    sent += len(block)

    async def run() -> dict:
        nonlocal peak
        stop = asyncio.Event()
        task = asyncio.create_task(flooder(stop))
        normal = asyncio.create_task(real_time(url, pcm))
        t0 = time.monotonic()
        while time.monotonic() - t0 < flood_s or not normal.done():
            peak = max(peak, rss_mb(proc.pid))
            await asyncio.sleep(0.1)
            if time.monotonic() - t0 > flood_s:
                stop.set()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        return await normal

    try:
        outcome = asyncio.run(run())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "rss_before_mb": round(base),
        "rss_peak_mb": round(peak),
        "flood_audio_s": round(sent / 32000),
        "normal_client": outcome,
    }


def never_reading(port: int, extra: list[str]) -> dict:
    proc = start(port, ["--max-streams", "2", "--idle-timeout", "5", *extra])
    try:
        hogs = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            sock.setblocking(False)
            hogs.append(sock)
        mask = os.urandom(4)
        frame = bytes([0x82, 0x80 | 16]) + mask + bytes(mask[i % 4] ^ 0 for i in range(16))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:
            for sock in hogs:
                with contextlib.suppress(OSError):
                    sock.send(frame)
        stopped_sending = time.monotonic()

        async def probe() -> float | None:
            import websockets

            while time.monotonic() - stopped_sending < 60:
                with contextlib.suppress(Exception):
                    async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                        await ws.send(b"\0\0" * 1600)
                        if "partial" in json.loads(await asyncio.wait_for(ws.recv(), 5)):
                            return time.monotonic() - stopped_sending
                await asyncio.sleep(0.25)
            return None

        freed = asyncio.run(probe())
        for sock in hogs:
            sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {"slot_free_after_s": None if freed is None else round(freed, 2)}


def sigterm(port: int, extra: list[str], pcm: bytes) -> dict:
    import websockets

    proc = start(port, extra)
    url = f"ws://127.0.0.1:{port}/"

    async def fast() -> None:
        with contextlib.suppress(Exception):
            async with websockets.connect(url, max_size=None) as ws:
                while True:
                    await ws.send(pcm[:64000])
                    await asyncio.sleep(0.05)

    async def run() -> list[dict]:
        speed = asyncio.create_task(fast())
        clients = [asyncio.create_task(real_time(url, pcm, seconds=10)) for _ in range(9)]
        await asyncio.sleep(4.0)
        proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*clients)
        speed.cancel()
        return results

    t_signal = time.monotonic() + 4.0
    results = asyncio.run(run())
    code = proc.wait(timeout=60)
    return {
        "finals": sum(r["final"] for r in results),
        "clients": len(results),
        "exit_code": code,
        "exit_after_signal_s": round(time.monotonic() - t_signal, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=27125)
    ap.add_argument("--flood-s", type=float, default=8.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("serve_args", nargs="*", help="extra `streamcli serve` options (after --)")
    args = ap.parse_args()
    audio, _ = sf.read(str(FILE), dtype="float32")
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    report = {
        "flood": flood(args.port, args.serve_args, args.flood_s, pcm),
        "never_reading": never_reading(args.port, args.serve_args),
        "sigterm": sigterm(args.port, args.serve_args, pcm),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
