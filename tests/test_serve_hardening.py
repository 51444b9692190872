"""streamcli serve under hostile and careless clients: floods, connect-first, clients that never read,
shutdown with a fast sender, foreign browser origins, odd HTTP, odd JSON; one odd file name in a batch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serve_helpers import FILE_A, SMALL_MODEL, Running, pcm16, small_recognizer
from typer.testing import CliRunner

from streamcli.cli import app
from streamcli.serve import ServeConfig, Server, read_token
from streamcli.transcription import transcribe

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402


@pytest.fixture(scope="module")
def recognizer():
    return small_recognizer()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def real_time_client(
    url: str, data: bytes, seconds: float | None = None, **kw
) -> tuple[str, list[dict]]:
    """0.2 s messages at real time, one answer read per message, then eof (or until the server closes:
    a shutdown). Returns (the text of every result, the answers)."""
    answers: list[dict] = []
    end = len(data) if seconds is None else min(len(data), int(seconds * 32000))
    async with connect(url, **kw) as ws:
        try:
            for i in range(0, end, 6400):
                await ws.send(data[i : i + 6400])
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                await asyncio.sleep(0.2)
            await ws.send('{"eof" : 1}')
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        except websockets.ConnectionClosed:
            pass
    return " ".join(a["text"] for a in answers if a.get("text")), answers


# ----- 1. a flood without reading: memory bounded, everyone else served ------------------------------
def test_a_flooding_client_is_slowed_and_others_are_served(recognizer):
    running = Running(recognizer, max_queued_audio_s=2.0)
    expected = " ".join(s.text for s in transcribe(str(FILE_A), recognizer)[0])
    try:
        before = rss_mb()

        async def flood(stop: asyncio.Event) -> int:
            sent = 0
            async with connect(running.url, max_size=None, compression=None) as ws:
                block = b"\x01\x00" * (1 << 19)  # 1 MiB: 32 s of audio per message
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(ws.send(block), 0.5)
                    except TimeoutError:
                        continue  # back-pressure: the server is not reading us
                    sent += len(block)
            return sent

        async def run() -> tuple[int, str]:
            stop = asyncio.Event()
            flooder = asyncio.create_task(flood(stop))
            await asyncio.sleep(1.0)
            text, answers = await real_time_client(running.url, pcm16(FILE_A))
            stop.set()
            return await flooder, text

        sent, text = asyncio.run(run())
        grown = rss_mb() - before
        assert text == expected  # served completely, not closed for idling
        assert grown < 400, f"server memory grew {grown:.0f} MB while a client flooded"
        # The flooder was slowed to what the worker decodes, far below what it could send.
        assert sent < 2000 * (1 << 20)
    finally:
        running.stop()


# ----- 2. --max-streams counts connections, not streams ----------------------------------------------
def test_max_streams_counts_connections_that_have_not_streamed(recognizer):
    running = Running(recognizer, max_streams=4)
    try:

        async def run() -> list[int | None]:
            clients = [await connect(running.url) for _ in range(8)]
            codes: list[int | None] = []
            for ws in clients:
                try:
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    assert "server busy" in reply["error"]
                    with pytest.raises(websockets.ConnectionClosed):
                        await ws.recv()
                    codes.append(ws.close_code)
                except TimeoutError:
                    codes.append(None)  # still open: being served
            for ws in clients:
                await ws.close()
            return codes

        codes = asyncio.run(run())
        assert codes.count(None) == 4 and codes.count(1013) == 4
    finally:
        running.stop()


# ----- 3. clients that never read do not keep their slots --------------------------------------------
def _raw_ws(port: int) -> socket.socket:
    """A WebSocket client on a bare socket with a tiny receive buffer that will never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    time.sleep(0.2)
    return sock


def _frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def test_clients_that_never_read_lose_their_slot(recognizer):
    idle_s, write_s = 2.0, 1.0
    running = Running(recognizer, max_streams=2, idle_timeout_s=idle_s, write_timeout_s=write_s)
    port = int(running.url.rsplit(":", 1)[1].strip("/"))
    try:
        hogs = [_raw_ws(port) for _ in range(2)]
        frame = _frame(b"\0\0" * 8)  # tiny audio messages, each answered, none read
        deadline = time.monotonic() + 4
        for sock in hogs:
            sock.setblocking(False)
        while time.monotonic() < deadline:
            for sock in hogs:
                with contextlib.suppress(BlockingIOError, OSError):
                    sock.send(frame)
        started = time.monotonic()

        async def served() -> bool:
            while time.monotonic() - started < idle_s + write_s + 8:
                async with connect(running.url) as ws:
                    await ws.send(b"\0\0" * 1600)
                    reply = json.loads(await ws.recv())
                    if "partial" in reply:
                        return True
                await asyncio.sleep(0.5)
            return False

        assert asyncio.run(served()), "the slots were still held by clients that never read"
        freed_s = time.monotonic() - started
        assert freed_s < idle_s + write_s + 8
        for sock in hogs:
            sock.close()
    finally:
        running.stop()


# ----- 4. SIGTERM with a fast sender: every real-time client gets its final, exit 0 ------------------
def test_sigterm_with_a_fast_sender_finalizes_everyone(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamcli",
            "serve",
            "--model",
            str(SMALL_MODEL),
            "--threads",
            "1",
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
        url = f"ws://127.0.0.1:{port}/"
        data = pcm16(FILE_A)

        async def fast() -> None:
            try:
                async with connect(url, max_size=None) as ws:
                    while True:  # 40x real time and more, never reading
                        await ws.send(data[:64000])
                        await asyncio.sleep(0.05)
            except websockets.ConnectionClosed:
                pass

        async def run() -> list[tuple[str, list[dict]]]:
            speed = asyncio.create_task(fast())
            clients = [asyncio.create_task(real_time_client(url, data, seconds=8)) for _ in range(9)]
            await asyncio.sleep(3.0)
            proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*clients)
            speed.cancel()
            return results

        started = time.monotonic()
        results = asyncio.run(run())
        code = proc.wait(timeout=15)
        stopped_s = time.monotonic() - started
    finally:
        proc.kill()
    assert code == 0
    assert stopped_s < 3.0 + 10
    for _text, answers in results:
        last = answers[-1]
        assert "result" in last and last["text"], answers[-3:]  # the final of what was said so far


# ----- 5. cross-site WebSocket hijacking ---------------------------------------------------------------
def test_foreign_origins_are_refused_own_page_and_programs_accepted(recognizer):
    running = Running(recognizer)
    allowed = Running(recognizer, allow_origins=["http://captions.example"])
    own = running.http.rstrip("/")
    try:

        async def run() -> None:
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(running.url, origin="http://evil.example"):
                    pass
            assert refused.value.response.status_code == 403
            for origin in (own, None):
                async with connect(running.url, origin=origin) as ws:
                    await ws.send(b"\0\0" * 1600)
                    assert "partial" in json.loads(await ws.recv())
            async with connect(allowed.url, origin="http://captions.example") as ws:
                await ws.send(b"\0\0" * 1600)
                assert "partial" in json.loads(await ws.recv())
            # A page claiming to be ours through another host name (DNS rebinding) is refused too.
            port = running.url.rsplit(":", 1)[1].strip("/")
            with pytest.raises(websockets.InvalidStatus):
                async with connect(
                    running.url,
                    origin=f"http://evil.example:{port}",
                    additional_headers={"Host": f"evil.example:{port}"},
                ):
                    pass

        asyncio.run(run())
    finally:
        running.stop()
        allowed.stop()


# ----- 6. one non-UTF-8 file name in a batch written to a folder -------------------------------------
def test_a_non_utf8_name_in_a_folder_batch_keeps_its_bytes(tmp_path):
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff.flac"))
    bad = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/worse\xff.wav"))
    good = tmp_path / "good.flac"
    good.write_bytes(FILE_A.read_bytes())
    odd.write_bytes(FILE_A.read_bytes())
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(odd),
            str(bad),
            str(good),
            "-o",
            f"{out}/",
            "--model",
            str(SMALL_MODEL),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 1, result.output
    assert (out / "good.txt").read_text().strip()
    written = os.listdir(os.fsencode(str(out)))
    assert b"bad\xff.txt" in written and sorted(written) == [b"bad\xff.txt", b"good.txt"]
    assert "1 of 3 inputs failed" in result.output and "Traceback" not in result.output


# ----- rough edges -------------------------------------------------------------------------------------
def _raw_http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_odd_http_gets_answers_not_tracebacks(recognizer, caplog):
    running = Running(recognizer)
    port = int(running.url.rsplit(":", 1)[1].strip("/"))
    try:
        two_upgrades = (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        answer = _raw_http(port, two_upgrades)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
        head = _raw_http(
            port, f"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # headers only
        post = _raw_http(
            port,
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert post.startswith(b"HTTP/1.1 405")
        assert "Traceback" not in caplog.text and "Exception in ASGI" not in caplog.text
    finally:
        running.stop()


def test_token_from_file_or_environment_and_any_bearer_case(recognizer, tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text("fromfile\n")
    assert read_token(None, secret) == "fromfile"
    monkeypatch.setenv("STREAMCLI_TOKEN", "fromenv")
    assert read_token(None, None) == "fromenv"
    assert read_token("given", None) == "given"
    with pytest.raises(ValueError, match="not both"):
        read_token("given", secret)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(None, tmp_path / "empty")
    running = Running(recognizer, token="s3cret")
    try:

        async def run() -> None:
            for scheme in ("bearer", "BEARER", "Bearer"):
                async with connect(
                    running.url, additional_headers={"Authorization": f"{scheme} s3cret"}
                ) as ws:
                    await ws.send(b"\0\0" * 1600)
                    assert "partial" in json.loads(await ws.recv())
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(running.url, additional_headers={"Authorization": "bearer wrong"}):
                    pass
            assert refused.value.response.status_code == 401

        asyncio.run(run())
        # The health checks need no token; everything else does.
        assert urllib.request.urlopen(running.http + "healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(running.http + "v1/models", timeout=5)
        assert (
            denied.value.code == 401 and json.loads(denied.value.read())["error"]["code"] == "invalid_api_key"
        )
    finally:
        running.stop()


def test_serve_config_refuses_absurd_limits():
    for field, value in (("max_queued_audio_s", 0.0), ("write_timeout_s", 0.0), ("max_file_jobs", 0)):
        with pytest.raises(ValueError):
            ServeConfig(**{field: value}).validate()


class _Broken:
    """A recognizer whose batched decoding fails: the worker dies on the first window."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info

    def create_stream(self):  # noqa: ANN201
        return self.inner.create_stream()

    def finals_worker(self):  # noqa: ANN201
        return None

    def decode_streams(self, streams) -> None:  # noqa: ANN001
        raise RuntimeError("simulated failure inside the encoder")


def test_a_dead_worker_stops_the_server_loudly(recognizer, caplog):
    from streamcli.serve import ServerError

    ports: list[int] = []
    server = Server(_Broken(recognizer), ServeConfig(port=0), on_ready=ports.append)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # noqa: BLE001 - what the CLI turns into one line and exit 1
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not ports and time.monotonic() < deadline:
        time.sleep(0.02)

    async def client() -> None:
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            async with connect(f"ws://127.0.0.1:{ports[0]}/") as ws:
                await ws.send(b"\0\0" * 16000)
                await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(client())
    thread.join(timeout=30)
    assert not thread.is_alive(), "the server kept running without its worker"
    assert failure and isinstance(failure[0], ServerError) and "simulated failure" in str(failure[0])
    assert "the serve worker stopped" in caplog.text
