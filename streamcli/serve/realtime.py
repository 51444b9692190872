"""OpenAI Realtime transcription sessions over WebSocket (``/v1/realtime?intent=transcription``).

Client events: ``session.update`` (or the older ``transcription_session.update``; input audio
``audio/pcm`` = pcm16 mono at 24000 Hz as the API specifies, or 16000), ``input_audio_buffer.append``
(base64), ``input_audio_buffer.commit`` (the audio so far is one finished turn: decoded to its end and
finalized; later audio starts the next), ``input_audio_buffer.clear`` (the open turn is discarded).

Server events, mapped from our stream: ``session.created`` / ``session.updated``;
``input_audio_buffer.speech_started`` when the open utterance first shows text (``audio_start_ms`` =
its first word's start); ``input_audio_buffer.speech_stopped`` + ``input_audio_buffer.committed``
when our endpointing closes it (server VAD is our endpoint detector; it is always on);
``conversation.item.input_audio_transcription.delta`` for each word that is not expected to change
(with a two-pass model: a word two successive refinements of the second pass agreed on, or that the
newest refinement heard 0.6 s of audio after; with a one-pass model: every word of the first-pass
hypothesis but the last, which may still grow); and ``...completed`` with the final text (the second
pass), which is authoritative. A delta cannot be taken back: where a later decode changes such a word,
the completed transcript differs from the item's deltas, and a client shows the completed text in
their place. Words just heard (less than 0.6 s of audio after them, one refinement) are never sent.
Errors are ``error`` events; the connection stays open unless the client breaks the transport.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections import deque

import numpy as np

from streamcli.refine import RefineConfig
from streamcli.results import Result
from streamcli.serve.connection import ClientGone, Connection, ServerEnding, parse_json
from streamcli.serve.context import ServerContext
from streamcli.serve.scheduler import Session, Update

RATES = (24000, 16000)
# Refinements give the deltas; the finals are not bound to them (completed = a file's text), and an
# utterance is never cut before the endpointer's own 20 s limit. A word is sent once two refinements
# agree on it or the newest one has 0.6 s of audio after it. Measured on 12 dev files (default model):
# first delta after the first word's end p50 0.83 s / max 1.40 s (agreement alone: 1.12 / 3.04 s;
# settled after 1.0 s: 1.12 / 1.66 s); items whose deltas the final changed 5 of 13 (agreement: 4).
REALTIME_REFINE = RefineConfig(bind_finals=False, max_open_s=28.0, settled_after_s=0.6)
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):012d}"


def error_event(
    message: str,
    kind: str = "invalid_request_error",
    code: str = "invalid_event",
    event_id: str | None = None,
) -> dict:
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {"type": kind, "code": code, "message": message, "param": None, "event_id": event_id},
    }


def stable_words(partial: Result) -> list[str]:
    """The words of the partial that will not change (see the module docstring)."""
    if partial.committed or partial.tentative:
        return (partial.stable or partial.committed).split()
    return partial.text.split()[:-1]


class RealtimeClient:
    """Turns the scheduler's updates into Realtime events (on the event loop)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.open_item: str | None = None
        self.open_start_ms = 0
        self.sent_words = 0
        self.stopped: deque[str] = deque()  # items closed by an endpoint, waiting for their final
        self.last_item: str | None = None
        self.failed = False

    def update(self, update: Update) -> None:  # worker thread
        self.connection.loop.call_soon_threadsafe(self._apply, update)

    def error(self, message: str) -> None:  # worker thread
        self.connection.post_threadsafe(error_event(message, "server_error", "transcription_failed"))

    def emit(self, event: dict) -> None:
        event.setdefault("event_id", new_id("event"))
        self.connection.post(event)

    def _apply(self, update: Update) -> None:
        offset_ms = round(update.offset_s * 1000)
        for _ in range(update.closed):
            self._stop(round(update.decoded_s * 1000) + offset_ms)
        for final in update.finals:
            if not self.stopped:  # a final whose words were never shown: its item in one go
                self._start(round(final.start * 1000) + offset_ms)
                self._stop(round(final.end * 1000) + offset_ms)
            item = self.stopped.popleft()
            self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item,
                    "content_index": 0,
                    "transcript": final.text,
                }
            )
        if update.pending == 0:
            while self.stopped:  # closed with text on screen, but the final found none
                self.emit(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": self.stopped.popleft(),
                        "content_index": 0,
                        "transcript": "",
                    }
                )
        if update.over:  # shutdown: every item is completed above; the connection closes
            self.connection.ending.set()
            return
        partial = update.partial
        refining = bool(partial.committed or partial.tentative)
        if self.open_item is None and partial.text.strip() and not (refining and self.stopped):
            start_s = partial.words[0].start if partial.words else update.decoded_s
            self._start(round(start_s * 1000) + offset_ms)
        if self.open_item is not None and not (refining and self.stopped):
            words = stable_words(partial)
            if len(words) > self.sent_words:
                delta = " ".join(words[self.sent_words :])
                self.emit(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": self.open_item,
                        "content_index": 0,
                        "delta": delta if self.sent_words == 0 else " " + delta,
                    }
                )
                self.sent_words = len(words)

    def _start(self, start_ms: int) -> None:
        self.open_item = new_id("item")
        self.sent_words = 0
        self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": max(0, start_ms),
                "item_id": self.open_item,
            }
        )

    def _stop(self, end_ms: int) -> None:
        if self.open_item is None:
            return
        item, self.open_item = self.open_item, None
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item})
        self.emit(
            {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self.last_item}
        )
        self.last_item = item
        self.stopped.append(item)


def session_object(session_id: str, rate: int, model: str) -> dict:
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": rate},
                "transcription": {"model": model, "language": "en"},
                "turn_detection": {"type": "server_vad"},
                "noise_reduction": None,
            }
        },
    }


def _requested_rate(event: dict, rate: int) -> int:
    """The input rate a session update asks for (GA and beta shapes); ValueError for what we lack."""
    session = event.get("session")
    if not isinstance(session, dict):
        raise ValueError("session.update needs a 'session' object")
    fmt = None
    audio = session.get("audio")
    if isinstance(audio, dict) and isinstance(audio.get("input"), dict):
        fmt = audio["input"].get("format")
    if fmt is None:
        fmt = session.get("input_audio_format")
    if fmt is None:
        return rate
    if fmt == "pcm16":
        return 24000
    if isinstance(fmt, dict) and fmt.get("type") in ("audio/pcm", "pcm16"):
        value = fmt.get("rate", 24000)
        if isinstance(value, int) and not isinstance(value, bool) and value in RATES:
            return value
        raise ValueError(f"input audio rate must be one of {RATES}, got {str(value)[:20]}")
    raise ValueError(f"input audio format must be audio/pcm (pcm16), got {str(fmt)[:40]}")


class EventError(ValueError):
    """A client event that cannot be applied: an ``error`` event with this code, the session goes on."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class RealtimeSession:
    """The client events of one session, one method each (see the module docstring)."""

    def __init__(self, server: ServerContext, connection: Connection) -> None:
        self.server = server
        self.connection = connection
        self.client = RealtimeClient(connection)
        self.rate = RATES[0]
        self.session_id = new_id("sess")
        self.model = server.recognizer.info.name
        self.stream: Session | None = None  # opened by the first audio

    def describe(self) -> dict:
        return session_object(self.session_id, self.rate, self.model)

    async def apply(self, event: dict) -> None:
        kind = event["type"]
        if kind in ("session.update", "transcription_session.update"):
            self.update_session(event, kind.replace("update", "updated"))
        elif kind == "input_audio_buffer.append":
            await self.append(event)
        elif kind == "input_audio_buffer.commit":
            if self.stream is None:
                raise EventError(
                    "input_audio_buffer.commit: the buffer is empty", "input_audio_buffer_commit_empty"
                )
            self.server.scheduler.finish(self.stream, restart=True)
        elif kind == "input_audio_buffer.clear":
            if self.stream is not None:
                self.server.scheduler.clear(self.stream)
            self.client.open_item = None
            self.client.emit({"type": "input_audio_buffer.cleared"})
        else:
            raise EventError(f"unknown or unsupported event type {kind[:60]!r}", "invalid_event")

    def update_session(self, event: dict, answer: str) -> None:
        try:
            requested = _requested_rate(event, self.rate)
        except ValueError as exc:
            raise EventError(str(exc), "invalid_value") from None
        if self.stream is not None and requested != self.rate:
            raise EventError("the input audio rate cannot change once audio was sent", "invalid_value")
        self.rate = requested
        self.client.emit({"type": answer, "session": self.describe()})

    async def append(self, event: dict) -> None:
        audio = event.get("audio")
        try:
            if not isinstance(audio, str):
                raise ValueError
            data = base64.b64decode(audio, validate=True)
        except (ValueError, binascii.Error):
            raise EventError(
                "input_audio_buffer.append: 'audio' must be base64 text", "invalid_base64"
            ) from None
        if len(data) % 2:
            raise EventError("audio must hold whole 16-bit samples (an even byte count)", "invalid_audio")
        scheduler = self.server.scheduler
        if self.stream is None:
            refine = REALTIME_REFINE if self.server.config.refine else None
            self.stream = scheduler.open(self.rate, self.client, refine=refine)
        scheduler.feed(self.stream, np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)
        await self.server.wait_for_backlog(self.stream, self.connection)


def parse_event(message: str | bytes) -> dict:
    """A client event (a JSON object with a string ``type``); EventError otherwise."""
    if isinstance(message, bytes):
        raise EventError("send JSON events; audio goes base64 in input_audio_buffer.append", "invalid_event")
    try:
        event = parse_json(message)
    except ValueError as exc:
        raise EventError(str(exc), "invalid_event") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise EventError("an event is a JSON object with a 'type'", "invalid_event")
    return event


async def handle(server: ServerContext, connection: Connection) -> None:
    """One Realtime transcription session (accepted, slot held by the caller)."""
    idle_s = server.config.idle_timeout_s
    session = RealtimeSession(server, connection)
    session.client.emit({"type": "session.created", "session": session.describe()})
    try:
        while True:
            try:
                message = await connection.receive(idle_s)
            except TimeoutError:
                session.client.emit(error_event(f"idle for {idle_s:g} s", code="idle_timeout"))
                await connection.close(1001, "idle")
                return
            event: dict = {}
            try:
                event = parse_event(message)
                await session.apply(event)
            except EventError as exc:
                event_id = event.get("event_id")
                event_id = event_id if isinstance(event_id, str) else None
                session.client.emit(error_event(str(exc), code=exc.code, event_id=event_id))
    except ServerEnding:
        await connection.end()
    except ClientGone:
        return
    finally:
        if session.stream is not None:
            server.scheduler.drop(session.stream)
