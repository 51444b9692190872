"""serve with the second pass as a stage of its own: partials are never held up by a slow final,
each session gets its finals in order, and newcomers are refused while finals are behind."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import numpy as np
import pytest
from paths import DEV, REPO
from serve_helpers import Running

from streamcli.audio import read_audio
from streamcli.families import create_recognizer
from streamcli.finals import ClosedUtterance
from streamcli.recognizer import RecognizerConfig
from streamcli.results import Segment
from streamcli.serve import FINALS_UTILIZATION
from streamcli.transcription import transcribe

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402

SMALL_MODEL = REPO / "models" / "streamcli-wctc-en-small"
FILES = [DEV / "librispeech/test-clean/1089/1089-134686-0000.flac",
         DEV / "librispeech/test-other/1688/1688-142285-0000.flac"]
SLOW_S = 2.0


class SlowUpperCase:
    """A second pass that takes SLOW_S per batch and writes the first pass in capitals."""

    name = "slow test pass"
    needs_hidden = False
    max_frames = 3000

    def __init__(self) -> None:
        self.final_times_ms: list[float] = []
        self.batches: list[int] = []

    def finalize(self, utterances: Sequence[ClosedUtterance]) -> list[Segment | None]:
        time.sleep(SLOW_S)
        self.batches.append(len(utterances))
        return [Segment(u.first_pass.start, u.first_pass.end, u.first_pass.text.upper(), u.first_pass.words)
                for u in utterances]


@pytest.fixture(scope="module")
def slow_recognizer():
    rec = create_recognizer(RecognizerConfig(model=str(SMALL_MODEL), device="cpu", threads=1))
    rec.attach_second_pass(SlowUpperCase())
    return rec


def _audio() -> np.ndarray:
    """Two utterances with a 2 s pause between them (an endpoint), then 1 s of silence."""
    parts = []
    for path in FILES:
        parts += [read_audio(path, target_rate=16000)[0], np.zeros(32000, np.float32)]
    return np.concatenate(parts)


def test_partials_flow_while_a_final_is_decoded_and_finals_come_in_order(slow_recognizer):
    audio = _audio()
    expected = [s.text for s in transcribe(audio, slow_recognizer, sample_rate=16000)[0]]
    assert len(expected) == 2 and all(t == t.upper() for t in expected)
    running = Running(slow_recognizer, max_streams=4)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()
    try:

        async def run() -> tuple[list[float], list[str], dict]:
            waits, finals = [], []
            async with connect(running.url) as ws:
                for i in range(0, len(pcm), 6400):  # 0.2 s messages at 4x real time
                    await asyncio.sleep(0.05)
                    sent = time.monotonic()
                    await ws.send(pcm[i : i + 6400])
                    answer = json.loads(await ws.recv())
                    waits.append(time.monotonic() - sent)
                    if answer.get("text"):
                        finals.append(answer["text"])
                await ws.send('{"eof" : 1}')
                last = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return waits, finals, last

        waits, finals, last = asyncio.run(run())
    finally:
        running.stop()
    # The first final took SLOW_S to decode; no answer waited for it (the tick went on).
    assert max(waits) < SLOW_S / 2, max(waits)
    # Finals in order: the first one during the stream (once ready), the rest with the final result.
    assert finals and finals[0] == expected[0]
    assert " ".join([*finals, last["text"]]).split() == " ".join(expected).split()


def test_newcomers_are_refused_while_finals_are_behind(slow_recognizer):
    running = Running(slow_recognizer, max_streams=4, max_final_wait_s=1.0)
    scheduler = running.server.scheduler
    try:

        async def run() -> None:
            running.server.finals_capacity = lambda: float("inf")  # only the wait decides here
            scheduler.final_wait_s = lambda: 5.0  # finals 5 s behind
            async with connect(running.url) as ws:
                reply = json.loads(await ws.recv())
                assert "server busy" in reply["error"] and "finals 5.0 s behind" in reply["error"]
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1013
            scheduler.final_wait_s = lambda: 0.2  # caught up: served again
            async with connect(running.url) as ws:
                await ws.send(b"\0\0" * 3200)
                assert "partial" in json.loads(await ws.recv())

        asyncio.run(run())
    finally:
        started = time.monotonic()
        running.stop()  # from another thread: the loop must wake at once
        assert time.monotonic() - started < 5 and not running.thread.is_alive()


def test_expected_wait_grows_with_the_queue():
    from streamcli.finals import FinalsWorker

    worker = FinalsWorker(SlowUpperCase(), max_batch=1)
    utterance = ClosedUtterance(np.zeros((500, 80), np.float32), np.zeros((100, 4), np.float32), None, 0,
                                Segment(0.0, 5.0, "a"))
    worker.submit(utterance).result(10)  # one batch measured: SLOW_S for 5 s of audio
    assert worker.expected_wait_s() == 0.0
    pending = [worker.submit(utterance) for _ in range(3)]
    # 3 x 5 s of audio queued or in flight at ~0.4 s per audio second
    assert worker.expected_wait_s() == pytest.approx(3 * 5.0 * SLOW_S / 5.0, rel=0.2)
    for f in pending:
        f.result(30)


def test_newcomers_beyond_the_measured_finals_capacity_are_refused():
    rec = create_recognizer(RecognizerConfig(model=str(SMALL_MODEL), device="cpu", threads=1))
    rec.attach_second_pass(SlowUpperCase())
    running = Running(rec, max_streams=8)
    try:
        worker = rec.finals_worker()
        calibrate = ClosedUtterance(np.zeros((500, 80), np.float32), np.zeros((100, 4), np.float32), None, 0,
                                    Segment(0.0, 5.0, "a"))
        worker.submit(calibrate).result(10)  # SLOW_S per 5 s of audio: 0.4 s per audio second
        capacity = running.server.finals_capacity()
        assert capacity == pytest.approx(FINALS_UTILIZATION * 5.0 / SLOW_S, rel=0.2)
        assert 1 <= capacity < 2

        async def run() -> None:
            async with connect(running.url) as a:
                await a.send(b"\0\0" * 3200)
                assert "partial" in json.loads(await a.recv())
                async with connect(running.url) as c:
                    reply = json.loads(await c.recv())
                    assert "keeps up with 1 real-time streams" in reply["error"]
                    with pytest.raises(websockets.ConnectionClosed):
                        await c.recv()
                    assert c.close_code == 1013

        asyncio.run(run())
    finally:
        running.stop()
