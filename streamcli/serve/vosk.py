"""The vosk-server WebSocket protocol, so Vosk clients work unchanged.

- optional first text message ``{"config": {"sample_rate": 16000}}`` (``words`` and
  ``max_alternatives`` are accepted and ignored: word times are always sent, one alternative);
- binary messages: 16-bit little-endian mono PCM at that rate (default 16000);
- every binary message is answered by exactly one text message: ``{"partial": "..."}``, or, when an
  endpoint closed a segment since the last answer, ``{"result": [{"word", "start", "end", "conf"}...],
  "text": "..."}`` (the final text: the second pass where the model has one);
- ``{"eof" : 1}`` is answered with the final result of the rest of the audio, then the server closes.

Errors get ``{"error": "..."}`` and a close frame with the reason (1003 bad data, 1009 too big,
1013 busy, 1001 idle, 1008 not reading answers).
"""

from __future__ import annotations

import asyncio

import numpy as np

from streamcli.refine import RefineConfig
from streamcli.results import Result, Segment
from streamcli.serve.config import MAX_SAMPLE_RATE
from streamcli.serve.connection import ClientGone, Connection, ServerEnding, parse_json
from streamcli.serve.context import ServerContext
from streamcli.serve.scheduler import Session, Update


def result_message(segment: Segment | None) -> dict:
    if segment is None:
        return {"result": [], "text": ""}
    words = [{"word": w.word, "start": w.start, "end": w.end, "conf": 1.0} for w in segment.words]
    return {"result": words, "text": segment.text}


def partial_message(partial: Result) -> dict:
    """Vosk's ``{"partial": text}``; with refinements also ``committed`` (the words of ``partial`` that
    will not change) and ``tentative`` (the rest): extra fields that Vosk clients ignore."""
    if not partial.committed and not partial.tentative:
        return {"partial": partial.text}
    return {"partial": partial.text, "committed": partial.committed, "tentative": partial.tentative}


def merge_segments(segments: list[Segment]) -> Segment | None:
    """Several segments closed between two answers become one result (one answer per message)."""
    if not segments:
        return None
    if len(segments) == 1:
        return segments[0]
    return Segment(
        start=segments[0].start,
        end=segments[-1].end,
        text=" ".join(s.text for s in segments),
        words=[w for s in segments for w in s.words],
        tokens=[t for s in segments for t in s.tokens],
    )


def parse_sample_rate(value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (1000 <= value <= MAX_SAMPLE_RATE and float(value).is_integer())
    ):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(f"config.sample_rate must be an integer 1000..{MAX_SAMPLE_RATE}, got {shown}")
    return int(value)


class VoskClient:
    """Turns the scheduler's updates into Vosk answers (one per audio message) on the event loop."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pending: list[Segment] = []
        self.finished = asyncio.Event()  # the final result is queued
        self.eof_sent = False  # the client asked for the end (else the server ended it: shutdown)

    def update(self, update: Update) -> None:  # worker thread
        self.connection.loop.call_soon_threadsafe(self._apply, update)

    def error(self, message: str) -> None:  # worker thread
        self.connection.loop.call_soon_threadsafe(self._fail, message)

    def _fail(self, message: str) -> None:
        self.connection.post({"error": message})
        self.connection.gone.set()  # the handler stops; no final will come

    def _apply(self, update: Update) -> None:
        self.pending += update.finals
        for _ in range(update.answered):
            if self.pending and not update.done:
                message = result_message(merge_segments(self.pending))
                partial = partial_message(update.partial)
                if "committed" in partial:  # refining: what the partial is now, after this final
                    message.update(committed=partial["committed"], tentative=partial["tentative"])
                self.pending = []
                self.connection.post(message)
            else:
                self.connection.post(partial_message(update.partial))
        if update.done:
            self.connection.post(result_message(merge_segments(self.pending)))
            self.pending = []
            self.finished.set()
            if not self.eof_sent:
                self.connection.ending.set()  # shutdown: the final is sent, then the connection closes


async def handle(server: ServerContext, connection: Connection) -> None:
    """One Vosk connection (accepted, slot held by the caller) until eof, error, idle or gone."""
    config = server.config
    scheduler = server.scheduler
    client = VoskClient(connection)
    rate = 16000
    session: Session | None = None

    def open_session() -> Session:
        return scheduler.open(rate, client, refine=RefineConfig() if config.refine else None)

    try:
        while True:
            try:
                message = await connection.receive(config.idle_timeout_s)
            except TimeoutError:
                await connection.fail({"error": f"idle for {config.idle_timeout_s:g} s"}, 1001, "idle")
                return
            if isinstance(message, bytes):
                if len(message) % 2:
                    error = "binary messages must hold whole 16-bit samples (an even byte count)"
                    await connection.fail({"error": error}, 1003, error)
                    return
                if session is None:
                    session = open_session()
                samples = np.frombuffer(message, dtype="<i2").astype(np.float32) / 32768.0
                scheduler.feed(session, samples)
                await server.wait_for_backlog(session, connection)
                continue
            try:
                data = parse_json(message)
                if isinstance(data, dict) and "eof" in data:
                    if session is None:
                        session = open_session()
                    client.eof_sent = True
                    scheduler.finish(session)
                    await connection.until(client.finished)
                    await connection.close(1000, "end of stream")
                    return
                if isinstance(data, dict) and isinstance(data.get("config"), dict) and session is None:
                    rate = parse_sample_rate(data["config"].get("sample_rate", rate))
                    continue
                raise ValueError('expected binary audio, {"config": {...}} first, or {"eof" : 1}')
            except ValueError as exc:
                await connection.fail({"error": str(exc)}, 1003, str(exc))
                return
    except ServerEnding:
        await connection.end()
    except ClientGone:
        return
    finally:
        if session is not None and not client.finished.is_set():
            scheduler.drop(session)
