"""``streamcli serve``: many live streams over WebSocket, batched into one encoder call per tick.

Protocol (vosk-server's WebSocket API, so Vosk clients work unchanged):

- optional first text message ``{"config": {"sample_rate": 16000}}`` (``words`` and
  ``max_alternatives`` are accepted and ignored: word times are always sent, one alternative);
- binary messages: 16-bit little-endian mono PCM at that rate (default 16000);
- every binary message is answered by exactly one text message: ``{"partial": "..."}``, or, when an
  endpoint closed a segment since the last answer, ``{"result": [{"word", "start", "end", "conf"}...],
  "text": "..."}`` (the final text: the second pass where the model has one);
- ``{"eof" : 1}`` is answered with the final result of the rest of the audio, then the server closes.

Finals: an utterance an endpoint closes goes to the recognizer's batched second-pass worker
(:mod:`streamcli.finals`); the tick goes on with every stream's first pass, and each session's finals
are answered in order as soon as they are ready. While a final closed now would wait longer than
``max_final_wait_s``, or while one more real-time stream would need more second pass than the worker's
measured cost allows (1 / seconds per audio second), new connections are refused with 1013 so the open
streams keep their latency.

Errors (malformed JSON, a bad sample rate, text where audio was expected, a message over the size
limit, too many streams, a wrong token, an idle connection) get ``{"error": "..."}`` where a reply is
still possible and a close frame with the reason; the server itself never stops for a client.

Scheduling: connections only queue audio; one worker thread owns every Stream. Each tick it feeds the
queued audio, gathers every stream with a window ready and runs ONE batched encoder call for all of
them (``Recognizer.decode_streams``), applies endpoints, and answers the waiting messages through the
event loop (``call_soon_threadsafe``), so the loop never blocks on inference and a slow or dead client
only loses its own answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from streamcli.recognizer import RecognizerLike, StreamDriver, decode_batch
from streamcli.refine import RefineConfig
from streamcli.results import Result, Segment

DEFAULT_PORT = 2700
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: 32 s of 16 kHz PCM in one message is plenty
MAX_SAMPLE_RATE = 192_000
PAGE = Path(__file__).with_name("serve_page.html")
# Share of the second-pass worker's time the admitted streams may need (finals_capacity). Measured with
# scripts/load_serve.py --stagger 20 (2 cores): at a cost of ~0.02 s per audio second, 16 streams had
# every final within 1 s of eof (p95 0.56 s), 32 (0.64 of the worker) p95 1.9 s, 47 p95 4.5 s.
FINALS_UTILIZATION = 0.5


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_streams: int = 64
    max_message_bytes: int = MAX_MESSAGE_BYTES
    idle_timeout_s: float = 30.0
    token: str | None = None
    # New connections are refused (1013) while a final closed now would wait longer than this.
    max_final_wait_s: float = 1.0
    refine: bool = True  # two-pass models: partials from the second pass's refinements

    def validate(self) -> ServeConfig:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {self.port}")
        if not 1 <= self.max_streams <= 10_000:
            raise ValueError(f"--max-streams must be 1..10000, got {self.max_streams}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"--idle-timeout must be > 0 s, got {self.idle_timeout_s}")
        if not self.max_final_wait_s > 0:
            raise ValueError(f"--max-final-wait must be > 0 s, got {self.max_final_wait_s}")
        if self.token is not None and not self.token:
            raise ValueError("--token must not be empty")
        return self


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


@dataclass
class _Session:
    driver: StreamDriver
    rate: int
    reply: Callable[[dict], None]  # thread-safe: schedules the answer on the event loop
    inbox: list[np.ndarray] = field(default_factory=list)
    waiting: int = 0  # binary messages not answered yet
    eof: bool = False
    closing: bool = False  # eof seen and decoded: waiting for the last finals
    closed: bool = False
    done: bool = False
    pending: list[Segment] = field(default_factory=list)
    # Measured for the load test: when each window's audio was complete (arrival) -> partial sent.
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (sample count so far, time)
    received: int = 0


class Scheduler:
    """The worker thread that owns every stream and batches their windows (see module docstring)."""

    def __init__(self, recognizer: RecognizerLike, refine: bool = True) -> None:
        self.recognizer = recognizer
        self.refine = refine
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamcli-serve-worker", daemon=True)
        self.ticks = 0
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self.finals = recognizer.finals_worker()
        if self.finals is not None:
            self.finals.on_done = self._wake.set  # a final is ready: answer it without waiting for audio

    def final_wait_s(self) -> float:
        """How long a final closed now would wait for the second pass (0 without one)."""
        return self.finals.expected_wait_s() if self.finals is not None else 0.0

    def finals_capacity(self) -> float:
        """Real-time streams the second pass keeps up with at its measured cost (inf: unmeasured), at
        FINALS_UTILIZATION of the worker: a queue served near 100 % busy waits without bound."""
        cost = self.finals.seconds_per_audio_s if self.finals is not None else 0.0
        return FINALS_UTILIZATION / cost if cost > 0 else float("inf")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if not s.done)

    def open(self, rate: int, reply: Callable[[dict], None]) -> _Session:
        # Closed utterances go to the batched second-pass worker; the tick never waits for a final.
        # With refinements the partials are the second pass's view of the words being spoken.
        refine = RefineConfig() if self.refine else None
        driver = StreamDriver(self.recognizer.create_stream(), finals=self.finals, refine=refine)
        session = _Session(driver, rate, reply)
        # Every final the driver delivers (in order, when ready) waits for the next answer.
        driver.on_segment = lambda segment: session.pending.append(segment)
        with self._lock:
            self._sessions.append(session)
        return session

    def feed(self, session: _Session, samples: np.ndarray) -> None:
        with self._lock:
            session.inbox.append(samples)
            session.waiting += 1
        self._wake.set()

    def finish(self, session: _Session) -> None:
        with self._lock:
            session.eof = True
        self._wake.set()

    def drop(self, session: _Session) -> None:
        """The client went away: its stream is discarded without further answers."""
        with self._lock:
            session.closed = True
        self._wake.set()

    def finalize_all(self) -> None:
        """Graceful shutdown: every open stream is finished and answered with its final result."""
        with self._lock:
            for s in self._sessions:
                s.eof = True
        self._wake.set()
        deadline = time.monotonic() + 30
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._tick():
                    self._wake.wait(0.01)
                    self._wake.clear()
        except BaseException as exc:  # reported by the server; streams stop getting answers
            self.error = exc

    def _tick(self) -> bool:
        with self._lock:
            sessions = [s for s in self._sessions if not s.done]
            self._sessions = sessions  # finished streams leave the table
            work = []
            for s in sessions:
                work.append((s, s.inbox, s.eof, s.closed))
                s.inbox = []
        busy = False
        for s, blocks, eof, closed in work:
            if closed:
                s.done = True
                continue
            for block in blocks:
                s.driver.stream.accept_waveform(s.rate, block)
                s.received += block.size
                s.arrivals.append((s.received, time.monotonic()))
                busy = True
            if eof and not s.driver.finished:
                s.driver.input_finished()
        live = [s for s, _, _, closed in work if not closed]
        # One batched encoder call for every stream with a window ready, then the per-window rules.
        decoded = decode_batch(self.recognizer, [s.driver for s in live])
        if decoded:
            self.ticks += 1
            self.batch_sizes.append(len(decoded))
            busy = True
        for s in live:
            if s.driver.stream.is_ready():
                continue  # more windows wait: answer once they are decoded
            if s.driver.finished and not s.closing:
                # eof: the rest of the audio is the last utterance; its final joins the queue.
                s.driver.close_utterance()
                s.closing = True
            s.driver.take_finals()  # finals ready by now, in order (on_segment -> pending)
            with self._lock:
                answers, s.waiting = s.waiting, 0
            for _ in range(answers):
                if s.pending and not s.driver.finished:
                    message = result_message(merge_segments(s.pending))
                    partial = partial_message(s.driver.partial())
                    if "committed" in partial:  # refining: what the partial is now, after this final
                        message.update(committed=partial["committed"], tentative=partial["tentative"])
                    s.reply(message)
                    s.pending = []
                else:
                    s.reply(partial_message(s.driver.partial()))
            if s.closing and not s.driver.pending_finals:
                # eof: every message was answered above and every final is in: the final result.
                s.reply({"final": result_message(merge_segments(s.pending))})
                s.pending = []
                s.done = True
        return busy


def _token_ok(config: ServeConfig, path: str, headers: Any) -> bool:
    if config.token is None:
        return True
    query = parse_qs(urlsplit(path).query)
    given = (query.get("token") or [""])[0]
    auth = headers.get("Authorization", "") if headers is not None else ""
    if auth.startswith("Bearer "):
        given = given or auth[len("Bearer ") :]
    return hmac.compare_digest(given.encode(), config.token.encode())


class Server:
    """The asyncio WebSocket server around one Scheduler; ``run()`` until SIGINT/SIGTERM."""

    def __init__(
        self, recognizer: RecognizerLike, config: ServeConfig, on_ready: Callable[[int], None] | None = None
    ) -> None:
        self.recognizer = recognizer
        self.config = config.validate()
        self.scheduler = Scheduler(recognizer, refine=config.refine)
        self.on_ready = on_ready
        self.port: int | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----- HTTP: the captions page -------------------------------------------------------------------
    def _process_request(self, connection: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not _token_ok(self.config, request.path, request.headers):
                return connection.respond(401, "missing or wrong token\n")
            return None  # accepted; beyond --max-streams _handle closes it with the reason
        if path in ("/", "/index.html"):
            response = connection.respond(200, PAGE.read_text(encoding="utf-8"))
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        if path == "/healthz":
            return connection.respond(200, json.dumps({"streams": self.scheduler.active}) + "\n")
        return connection.respond(404, "not found\n")

    # ----- one connection ---------------------------------------------------------------------------
    async def _handle(self, websocket: Any) -> None:
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[dict | None] = asyncio.Queue()

        def reply(message: dict) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, message)

        async def fail(message: str, code: int = 1003) -> None:
            with contextlib.suppress(Exception):
                await websocket.send(json.dumps({"error": message}))
            await websocket.close(code, message[:120])

        if self.scheduler.active >= self.config.max_streams:
            await fail(f"server busy: {self.config.max_streams} streams already open (--max-streams)", 1013)
            return
        # Refuse newcomers before the streams already open see their finals degrade: when finals are
        # behind now, or when one more stream would need more second pass than the worker has.
        wait_s = self.scheduler.final_wait_s()
        if wait_s > self.config.max_final_wait_s:
            await fail(f"server busy: finals {wait_s:.1f} s behind (--max-final-wait "
                       f"{self.config.max_final_wait_s:g} s)", 1013)
            return
        capacity = self.scheduler.finals_capacity()
        if self.scheduler.active + 1 > capacity:
            await fail(f"server busy: the second pass keeps up with {int(capacity)} real-time streams", 1013)
            return
        rate = 16000
        session: _Session | None = None
        sender = asyncio.create_task(self._send_loop(websocket, outbox))
        try:
            while True:
                try:
                    message = await asyncio.wait_for(websocket.recv(), timeout=self.config.idle_timeout_s)
                except TimeoutError:
                    await fail(f"idle for {self.config.idle_timeout_s:g} s", 1001)
                    return
                if isinstance(message, bytes):
                    if len(message) % 2:
                        await fail("binary messages must hold whole 16-bit samples (an even byte count)")
                        return
                    if session is None:
                        session = self.scheduler.open(rate, reply)
                    samples = np.frombuffer(message, dtype="<i2").astype(np.float32) / 32768.0
                    self.scheduler.feed(session, samples)
                    continue
                try:
                    data = json.loads(message)
                except json.JSONDecodeError:
                    await fail("malformed JSON in a text message")
                    return
                if isinstance(data, dict) and "eof" in data:
                    if session is None:
                        session = self.scheduler.open(rate, reply)
                    self.scheduler.finish(session)
                    await sender
                    await websocket.close(1000, "end of stream")
                    return
                if isinstance(data, dict) and isinstance(data.get("config"), dict) and session is None:
                    value = data["config"].get("sample_rate", rate)
                    if (
                        isinstance(value, bool)
                        or not isinstance(value, (int, float))
                        or not (1000 <= value <= MAX_SAMPLE_RATE and float(value).is_integer())
                    ):
                        await fail(
                            f"config.sample_rate must be an integer 1000..{MAX_SAMPLE_RATE}, got {value!r}"
                        )
                        return
                    rate = int(value)
                    continue
                await fail('expected binary audio, {"config": {...}} first, or {"eof" : 1}')
                return
        except Exception:  # the client vanished (connection reset): only its own stream ends
            return
        finally:
            if session is not None and not session.done and not session.eof:
                self.scheduler.drop(session)
            if not sender.done():
                sender.cancel()

    async def _send_loop(self, websocket: Any, outbox: asyncio.Queue) -> None:
        while True:
            message = await outbox.get()
            final = "final" in message
            payload = message["final"] if final else message
            try:
                await websocket.send(json.dumps(payload, ensure_ascii=False))
            except Exception:
                return
            if final:
                return

    # ----- life cycle ---------------------------------------------------------------------------------
    async def serve(self) -> None:
        from websockets.asyncio.server import serve

        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stopping.set)
        self.scheduler.start()
        async with serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            max_size=self.config.max_message_bytes,
            ping_interval=20,
            ping_timeout=20,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            if self.on_ready is not None:
                self.on_ready(self.port)
            await self._stopping.wait()
            # Graceful: open streams get their final results before the sockets close.
            await loop.run_in_executor(None, self.scheduler.finalize_all)
            await asyncio.sleep(0.2)
        self.scheduler.stop()

    def stop(self) -> None:
        """Graceful stop; callable from any thread (an asyncio.Event set from another thread would not
        wake the loop: the server ran on until something else woke it)."""
        if self._stopping is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    def run(self) -> None:
        asyncio.run(self.serve())
