"""streamcli serve: the vosk-server protocol over a real WebSocket on 127.0.0.1, limits, batching."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request

import pytest
from serve_helpers import FILE_A, FILE_B, Running, pcm16, small_recognizer

from streamcli.transcription import transcribe

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402


@pytest.fixture(scope="module")
def recognizer():
    return small_recognizer()


@pytest.fixture(scope="module")
def server(recognizer):
    running = Running(recognizer, max_streams=8)
    yield running
    running.stop()


async def stream_file(
    url: str, data: bytes, chunk_bytes: int = 6400, pause_s: float = 0.0, stop_after: int | None = None
) -> tuple[str, list[dict]]:
    """Sends 0.2 s messages, reads one answer per message, then eof; returns (final text, answers)."""
    answers: list[dict] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": 16000}}))
        for n, i in enumerate(range(0, len(data), chunk_bytes)):
            if stop_after is not None and n >= stop_after:
                return "", answers  # leaves without eof: the connection just drops
            await ws.send(data[i : i + chunk_bytes])
            answers.append(json.loads(await ws.recv()))
            if pause_s:
                await asyncio.sleep(pause_s)
        await ws.send('{"eof" : 1}')
        answers.append(json.loads(await ws.recv()))
    texts = [a["text"] for a in answers if a.get("text")]
    return " ".join(texts), answers


def test_final_text_equals_transcribe(server, recognizer):
    text, answers = asyncio.run(stream_file(server.url, pcm16(FILE_A)))
    assert text == " ".join(s.text for s in transcribe(str(FILE_A), recognizer)[0])
    assert text
    partials = [a for a in answers[:-1] if a.get("partial")]
    assert partials, "partial text must arrive before the end"
    final = answers[-1]
    assert "result" in final and all({"word", "start", "end", "conf"} <= set(w) for w in final["result"])


def test_one_answer_per_message_and_close_after_eof(server):
    async def run() -> None:
        async with connect(server.url) as ws:
            await ws.send(b"\0\0" * 3200)
            assert "partial" in json.loads(await ws.recv())
            await ws.send('{"eof" : 1}')
            assert json.loads(await ws.recv()) == {"result": [], "text": ""}
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1000

    asyncio.run(run())


@pytest.mark.parametrize(
    "first,error",
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"config": {"sample_rate": 0}}), "sample_rate"),
        (json.dumps({"config": {"sample_rate": "fast"}}), "sample_rate"),
        ("hello", "malformed JSON"),
        (json.dumps({"text": "audio expected"}), "expected binary audio"),
        (b"\0\0\0", "even byte count"),
        # What json itself cannot take (ValueError / RecursionError, not JSONDecodeError).
        ('{"config": {"sample_rate": ' + "9" * 5000 + "}}", "malformed JSON"),
        ("[" * 100_000 + "]" * 100_000, "malformed JSON"),
        (json.dumps({"config": {"sample_rate": 10**40}}), "sample_rate"),
    ],
)
def test_bad_input_gets_an_error_and_a_close(server, first, error):
    async def run() -> None:
        async with connect(server.url) as ws:
            await ws.send(first)
            reply = json.loads(await ws.recv())
            assert error in reply["error"]
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1003 and ws.close_reason

    asyncio.run(run())
    assert asyncio.run(stream_file(server.url, pcm16(FILE_A)))[0]  # the server is still fine


def test_message_size_limit(recognizer):
    running = Running(recognizer, max_message_bytes=64 * 1024)
    try:

        async def run() -> None:
            async with connect(running.url, max_size=None) as ws:
                await ws.send(b"\0" * (128 * 1024))
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1009

        asyncio.run(run())
    finally:
        running.stop()


def test_max_streams_idle_timeout_and_token(recognizer):
    running = Running(recognizer, max_streams=1, idle_timeout_s=1.0, token="s3cret")
    try:

        async def run() -> None:
            with pytest.raises(websockets.InvalidStatus):
                async with connect(running.url):
                    pass
            with pytest.raises(websockets.InvalidStatus):
                async with connect(running.url + "?token=wrong"):
                    pass
            async with connect(running.url + "?token=s3cret") as first:
                await first.send(b"\0\0" * 1600)
                await first.recv()
                async with connect(
                    running.url, additional_headers={"Authorization": "Bearer s3cret"}
                ) as second:
                    reply = json.loads(await second.recv())
                    assert "server busy" in reply["error"] and "1 streams" in reply["error"]
                    with pytest.raises(websockets.ConnectionClosed):
                        await second.recv()
                    assert second.close_code == 1013
                # The first one then goes silent: closed after the idle timeout.
                reply = json.loads(await asyncio.wait_for(first.recv(), 5))
                assert "idle" in reply["error"]

        asyncio.run(run())
    finally:
        running.stop()


def test_a_killed_client_does_not_disturb_another(server, recognizer):
    async def run() -> tuple[str, list]:
        victim = asyncio.create_task(stream_file(server.url, pcm16(FILE_B), stop_after=5))
        survivor = asyncio.create_task(stream_file(server.url, pcm16(FILE_A), pause_s=0.01))
        await victim
        return await survivor

    text, _ = asyncio.run(run())
    assert text == " ".join(s.text for s in transcribe(str(FILE_A), recognizer)[0])


def test_streams_are_batched(server):

    async def run() -> list:
        return await asyncio.gather(
            *(stream_file(server.url, pcm16(FILE_A), chunk_bytes=32000) for _ in range(4))
        )

    results = asyncio.run(run())
    assert len({r[0] for r in results}) == 1
    assert server.server.scheduler.largest_batch > 1


def test_graceful_shutdown_finalizes_open_streams(recognizer):
    running = Running(recognizer)

    async def run() -> dict:
        async with connect(running.url) as ws:
            data = pcm16(FILE_A)
            for i in range(0, len(data) // 2, 6400):
                await ws.send(data[i : i + 6400])
                await ws.recv()
            threading.Thread(target=running.server.stop).start()
            return json.loads(await asyncio.wait_for(ws.recv(), 30))

    final = asyncio.run(run())
    running.thread.join(timeout=30)
    assert "result" in final and final["text"]


def test_page_is_served(server):
    page = urllib.request.urlopen(server.http + "?autostart=1", timeout=10).read().decode()
    assert "getUserMedia" in page and "audioWorklet" in page and 'id="finals"' in page
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.http + "nothing-here", timeout=10)
