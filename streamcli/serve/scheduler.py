"""The worker thread that owns every served stream and batches their windows into one encoder call.

Connections (Vosk, Realtime, REST) only queue audio here; one thread feeds it to the streams, gathers
every stream with a window ready and runs ONE batched encoder call per tick
(:func:`streamcli.recognizer.decode_batch`), applies endpoints, and tells each session's client what
changed (:class:`Update`, from the worker thread: clients hand it to their event loop themselves).

Bounds: a session's queued audio (waiting here or inside its stream, not decoded yet) is reported by
:meth:`Scheduler.backlog_s`; connections stop reading while it exceeds the server's limit, so a client
sending faster than the worker decodes is slowed by TCP back-pressure and memory stays bounded. Each
tick decodes one window per stream, so a fast sender cannot take the worker from the others. Audio
that arrives after a session's end (eof, or shutdown) is dropped, never fed to a finished stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamcli.recognizer import RecognizerLike, StreamDriver, decode_batch
from streamcli.refine import RefineConfig
from streamcli.results import Result, Segment

log = logging.getLogger("streamcli.serve")


@dataclass
class Update:
    """What happened to one session in one tick (handed to its client on the worker thread)."""

    answered: int  # audio messages whose audio is now decoded (the Vosk protocol answers each)
    finals: list[Segment]  # finals delivered since the last update, in order
    partial: Result  # the text shown now after the finals (refined view or first pass)
    closed: int  # utterances closed by an endpoint in this tick (their finals follow)
    decoded_s: float  # audio of the current stream decoded so far (s)
    done: bool  # eof (or a commit) was decoded and every final is in
    pending: int = 0  # finals closed but not delivered yet
    offset_s: float = 0.0  # where the current stream starts in the session's audio (after commits)
    over: bool = False  # the session's last update: no stream follows (eof or shutdown, not a commit)


class Client(Protocol):
    def update(self, update: Update) -> None: ...
    def error(self, message: str) -> None: ...  # this session failed (worker thread); no more updates


@dataclass
class Session:
    driver: StreamDriver
    rate: int
    client: Client
    inbox: list[np.ndarray] = field(default_factory=list)
    inbox_samples: int = 0
    # Audio that arrived after a commit, for the next stream (the commit splits the audio where it came).
    next_inbox: list[np.ndarray] = field(default_factory=list)
    next_samples: int = 0
    waiting: int = 0  # audio messages not answered yet
    eof: bool = False
    closing: bool = False  # eof seen and decoded: waiting for the last finals
    closed: bool = False
    done: bool = False
    finals: list[Segment] = field(default_factory=list)
    refine: RefineConfig | None = None
    restart: bool = False  # at eof start a new stream instead of ending (a Realtime commit)
    clear: bool = False  # discard the open utterance and the queued audio (a Realtime clear)
    offset_s: float = 0.0


class Scheduler:
    """The worker thread; see the module docstring."""

    def __init__(
        self, recognizer: RecognizerLike, on_fatal: Callable[[BaseException], None] | None = None
    ) -> None:
        self.recognizer = recognizer
        self.on_fatal = on_fatal
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamcli-serve-worker", daemon=True)
        self.largest_batch = 0
        self.audio_s = 0.0  # audio accepted over the server's life (s)
        self.busy_s = 0.0  # time spent in batched decoding (s)
        self.on_tick: Callable[[int, float], None] | None = None  # (streams in the batch, seconds)
        self.error: BaseException | None = None
        self._stopping = False
        self.finals = recognizer.finals_worker()
        if self.finals is not None:
            self.finals.on_done = self._wake.set  # a final is ready: deliver it without waiting for audio

    def final_wait_s(self) -> float:
        """How long a final closed now would wait for the second pass (0 without one)."""
        return self.finals.expected_wait_s() if self.finals is not None else 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    @property
    def active(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions if not s.done)

    def open(self, rate: int, client: Client, refine: RefineConfig | None) -> Session:
        # Closed utterances go to the batched second-pass worker; the tick never waits for a final.
        # With refinements the partials are the second pass's view of the words being spoken.
        finals: list[Segment] = []
        session = Session(self._driver(refine, finals), rate, client, finals=finals, refine=refine)
        with self._lock:
            self._sessions.append(session)
        return session

    def _driver(self, refine: RefineConfig | None, finals: list[Segment]) -> StreamDriver:
        """A new stream of a session; its finals go to ``finals`` in order, told with the next update."""
        return StreamDriver(
            self.recognizer.create_stream(), finals=self.finals, refine=refine, on_segment=finals.append
        )

    def feed(self, session: Session, samples: np.ndarray) -> None:
        """Queues audio (one client message); ignored once the session has ended (eof or shutdown)."""
        with self._lock:
            if (session.eof and not session.restart) or session.closed or self._stopping:
                return
            if session.eof:  # after a commit: the next stream's
                session.next_inbox.append(samples)
                session.next_samples += samples.size
                return
            session.inbox.append(samples)
            session.inbox_samples += samples.size
            session.waiting += 1
        self._wake.set()

    def backlog_s(self, session: Session) -> float:
        """Audio of this session not decoded yet: queued here plus waiting inside its stream (s)."""
        stream = session.driver.stream
        with self._lock:
            queued = (session.inbox_samples + session.next_samples) / session.rate
        return queued + max(0.0, stream.received_s - stream.decoded_s)

    def finish(self, session: Session, restart: bool = False) -> None:
        """The audio so far is complete: decoded to its end and finalized. ``restart``: later audio
        goes to a new stream (a Realtime commit) instead of being refused."""
        with self._lock:
            if session.eof:
                return
            session.eof = True
            session.restart = restart
        self._wake.set()

    def clear(self, session: Session) -> None:
        """Discards the queued audio and the open utterance (finals already closed still come)."""
        with self._lock:
            session.inbox, session.inbox_samples = [], 0
            session.next_inbox, session.next_samples = [], 0
            session.clear = True
        self._wake.set()

    def drop(self, session: Session) -> None:
        """The client went away: its stream is discarded without further updates."""
        with self._lock:
            session.closed = True
        self._wake.set()

    def finalize_all(self, timeout_s: float = 10.0) -> bool:
        """Graceful shutdown: every open stream ends here (later audio is dropped) and gets its final
        update; returns whether all did within ``timeout_s``."""
        with self._lock:
            self._stopping = True
            for s in self._sessions:
                s.eof, s.restart = True, False
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.active and self.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.active

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._tick():
                    self._wake.wait(0.01)
                    self._wake.clear()
        except BaseException as exc:  # the server stops and the process fails: never silently
            self.error = exc
            log.exception("the serve worker stopped")
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def _tick(self) -> bool:
        with self._lock:
            sessions = [s for s in self._sessions if not s.done]
            self._sessions = sessions  # finished streams leave the table
            work = []
            for s in sessions:
                work.append((s, s.inbox, s.eof, s.closed, s.clear))
                s.inbox, s.inbox_samples, s.clear = [], 0, False
        busy = False
        live: list[Session] = []
        for s, blocks, eof, closed, clear in work:
            if closed:
                s.done = True
                continue
            live.append(s)
            if clear and not s.driver.finished:
                s.driver.stream.close_utterance()  # its final is never asked for
                if s.driver.refiner is not None:
                    s.driver.refiner.reset()
            if s.driver.finished:
                continue  # audio after the end is dropped (feed() refuses it too; this is the race)
            for block in blocks:
                s.driver.stream.accept_waveform(s.rate, block)
                self.audio_s += block.size / s.rate
                busy = True
            if eof:
                s.driver.input_finished()
        # One batched encoder call for every stream with a window ready, then the per-window rules.
        started = time.perf_counter()
        decoded = decode_batch(self.recognizer, [s.driver for s in live])
        closed_by: dict[int, int] = {}
        if decoded:
            elapsed = time.perf_counter() - started
            self.busy_s += elapsed
            self.largest_batch = max(self.largest_batch, len(decoded))
            if self.on_tick is not None:
                self.on_tick(len(decoded), elapsed)
            for driver, window in decoded:
                if window.closed:
                    closed_by[id(driver)] = closed_by.get(id(driver), 0) + 1
            busy = True
        for s in live:
            try:
                self._answer(s, closed_by.get(id(s.driver), 0))
            except Exception as exc:  # one stream's failure (e.g. its second pass) ends that stream only
                log.exception("a served stream failed")
                s.done = True
                s.client.error(f"transcription failed: {exc.__class__.__name__}")
        return busy

    def _answer(self, s: Session, closed_now: int) -> None:
        """Tells the client what its stream did once it caught up with the audio fed so far."""
        if s.driver.stream.is_ready():
            if closed_now:
                s.client.update(self._update(s, 0, closed_now, done=False))
            return  # more windows wait: answer the messages once they are decoded
        if s.driver.finished and not s.closing:
            # eof: the rest of the audio is the last utterance; its final joins the queue.
            s.driver.close_utterance()
            s.closing = True
            closed_now += 1
        s.driver.take_finals()  # finals ready by now, in order (on_segment -> s.finals)
        with self._lock:
            answered, s.waiting = s.waiting, 0
        done = s.closing and not s.driver.pending_finals
        if answered or s.finals or closed_now or done:
            s.client.update(self._update(s, answered, closed_now, done, over=done and not s.restart))
        if done and s.restart:  # a commit: the next audio starts a new stream where this one ended
            with self._lock:
                s.offset_s += s.driver.stream.received_s
                s.driver = self._driver(s.refine, s.finals)
                s.eof = s.restart = s.closing = False
                s.inbox, s.inbox_samples = s.next_inbox, s.next_samples
                s.next_inbox, s.next_samples = [], 0
        elif done:
            s.done = True

    @staticmethod
    def _update(s: Session, answered: int, closed: int, done: bool, over: bool = False) -> Update:
        finals = list(s.finals)
        s.finals.clear()  # the driver's on_segment appends to this very list
        driver = s.driver
        return Update(
            answered,
            finals,
            driver.partial(),
            closed,
            driver.stream.decoded_s,
            done,
            pending=driver.pending_finals,
            offset_s=s.offset_s,
            over=over,
        )
