"""Live transcription from an audio input: capture callback -> queue -> recognizer worker -> events.

The capture side is anything shaped like ``sounddevice.InputStream`` (a microphone, an audio server's
monitor source, a file played at 1x by :class:`streamcli.capture.FileInputStream`, or a fake in tests):
its callback only copies each block into a queue, so a slow recognizer never stalls the audio thread.
A worker thread downmixes, resamples to the model rate and feeds the one streaming loop
(:class:`streamcli.recognizer.StreamDriver`: ready windows, partials, endpoints, segments), and
publishes events (partial text, finalized segments, status). Nothing here draws on a terminal or
writes files; ``streamcli.cli.live`` renders the events and ``streamcli.formats`` writes them.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from streamcli.audio import AudioConverter
from streamcli.capture import (
    FileInputStream,
    InputDevice,
    InputStreamLike,
    open_sounddevice_stream,
    resolve_input_device,
)
from streamcli.errors import AudioError, DeviceError
from streamcli.recent import Recent
from streamcli.recognizer import RecognizerLike, StreamDriver
from streamcli.refine import RefineConfig
from streamcli.results import Result, Segment

# How long the capture may go quiet (no callback at all) before the device counts as gone. Real
# devices and audio servers deliver blocks every few ms, even of silence.
DEFAULT_STALL_TIMEOUT_S = 5.0
FIRST_BLOCK_TIMEOUT_S = 15.0
# Audio the queue may hold before new blocks are dropped (and counted): bounds memory when the
# recognizer cannot keep up instead of letting latency grow without limit.
DEFAULT_MAX_QUEUED_S = 30.0
# Rolling window of token latencies shown on the status line.
LATENCY_WINDOW_TOKENS = 200


# factory(device=, samplerate=, channels=, blocksize=, callback=, finished_callback=) -> stream
InputStreamFactory = Callable[..., InputStreamLike]


@dataclass(frozen=True)
class LiveStatus:
    """A snapshot for the status line (latencies in ms, level in dBFS)."""

    audio_s: float
    level_dbfs: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    rtf: float | None
    provider: str
    overflowed_blocks: int
    dropped_blocks: int
    segments: int


@dataclass(frozen=True)
class PartialEvent:
    text: str
    committed: str = ""  # with refinements: the words that will not change (text starts with them)
    tentative: str = ""


@dataclass(frozen=True)
class SegmentEvent:
    segment: Segment


@dataclass(frozen=True)
class StatusEvent:
    status: LiveStatus


LiveEvent = PartialEvent | SegmentEvent | StatusEvent


@dataclass
class LiveSummary:
    """What a finished session did; latencies over every emitted token (ms)."""

    audio_s: float = 0.0
    wall_s: float = 0.0
    segments: int = 0
    tokens: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_max_ms: float | None = None
    rtf: float | None = None
    provider: str = ""
    capture_rate_hz: int = 0
    capture_channels: int = 0
    blocks: int = 0
    overflowed_blocks: int = 0
    dropped_blocks: int = 0
    dropped_s: float = 0.0
    stop_reason: str = ""
    latencies_ms: list[float] = field(default_factory=list, repr=False)


@dataclass
class _Block:
    samples: np.ndarray  # (frames, channels) float32, a copy owned by the queue
    arrival_s: float  # monotonic wall clock when the callback received it


class _Stop:
    """Queue sentinel: the capture ended (or was asked to)."""


def percentile_ms(values: list[float] | deque[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class LiveTranscriber:
    """Runs one live session; iterate :meth:`events` to consume it, :meth:`stop` to end it cleanly.

    ``recognizer`` follows the streamcli recognizer API (create_stream, info). The input is either
    a PortAudio device (default), a file at ``file_speed`` x (``input_file``), or whatever
    ``stream_factory`` builds (tests inject fake streams through it).
    """

    def __init__(
        self,
        recognizer: RecognizerLike,
        *,
        input_device: str | int | None = None,
        input_file: str | Path | None = None,
        sample_rate_hz: int | None = None,
        channels: int | None = None,
        block_ms: float = 0.0,
        duration_s: float | None = None,
        file_speed: float = 1.0,
        stream_factory: InputStreamFactory | None = None,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        max_queued_s: float = DEFAULT_MAX_QUEUED_S,
        status_interval_s: float = 0.1,
        save_audio: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        refine: bool = True,
    ) -> None:
        if duration_s is not None and duration_s <= 0:
            raise ValueError(f"--duration must be > 0 seconds, got {duration_s}")
        if sample_rate_hz is not None and sample_rate_hz <= 0:
            raise ValueError(f"--sample-rate must be > 0 Hz, got {sample_rate_hz}")
        if channels is not None and channels <= 0:
            raise ValueError(f"--channels must be >= 1, got {channels}")
        if file_speed < 0:
            raise ValueError(f"--input-speed must be >= 0, got {file_speed}")
        if block_ms < 0:
            raise ValueError(f"--block-ms must be >= 0, got {block_ms}")
        if stall_timeout_s <= 0 or max_queued_s <= 0:
            raise ValueError("stall_timeout_s and max_queued_s must be > 0")
        if input_file is not None and input_device is not None:
            raise ValueError("give either --input-device or --input-file, not both")
        self.recognizer = recognizer
        self.refine = refine  # two-pass models: partials from the second pass's refinements
        self.input_device = input_device
        self.input_file = input_file
        self.duration_s = duration_s
        self.stall_timeout_s = stall_timeout_s
        self.status_interval_s = status_interval_s
        self.save_audio = Path(save_audio) if save_audio is not None else None
        self._clock = clock
        self._queue: queue.Queue[_Block | _Stop] = queue.Queue()
        self._events: queue.Queue[LiveEvent | BaseException | _Stop] = queue.Queue()
        self._stop_requested = threading.Event()
        self._capture_finished = threading.Event()
        self._lock = threading.Lock()
        self._queued_frames = 0
        self._room = threading.Event()  # set by the worker when it takes a block off the queue
        self._last_callback_s = 0.0
        self._worker: threading.Thread | None = None
        self._done = threading.Event()
        self.summary = LiveSummary(provider=recognizer.info.provider)
        self.device: InputDevice | None = None

        self._stream = self._open_input(
            input_device, input_file, sample_rate_hz, channels, block_ms, file_speed, stream_factory
        )
        self.capture_rate_hz = int(round(float(self._stream.samplerate)))
        self.capture_channels = int(self._stream.channels)
        self.summary.capture_rate_hz = self.capture_rate_hz
        self.summary.capture_channels = self.capture_channels
        self._max_queued_frames = int(max_queued_s * self.capture_rate_hz)
        try:
            self._recording = self._open_recording(int(recognizer.info.sample_rate))
        except BaseException:
            self.close()
            raise

    def _open_recording(self, model_rate_hz: int) -> Any:
        if self.save_audio is None:
            return None
        import soundfile

        # Exactly what the recognizer hears (mono, model rate, float), so `streamcli transcribe` of
        # this file reproduces the session.
        try:
            return soundfile.SoundFile(
                str(self.save_audio), "w", samplerate=model_rate_hz, channels=1, subtype="FLOAT", format="WAV"
            )
        except (RuntimeError, OSError) as exc:
            raise ValueError(f"cannot write --save-audio {self.save_audio}: {exc}") from None

    # -- capture side -------------------------------------------------------------------------
    def _open_input(
        self,
        input_device: str | int | None,
        input_file: str | Path | None,
        sample_rate_hz: int | None,
        channels: int | None,
        block_ms: float,
        file_speed: float,
        stream_factory: InputStreamFactory | None,
    ) -> InputStreamLike:
        def frames(rate_hz: float) -> int:  # 0 lets the audio system choose its block size
            return max(1, round(block_ms / 1000 * rate_hz)) if block_ms else 0

        callbacks = {"callback": self._on_audio, "finished_callback": self._on_finished}
        if stream_factory is not None:
            # Only what the user asked for, so a factory's own defaults (a fake's rate) stay in force.
            asked = {"device": input_device, "samplerate": sample_rate_hz, "channels": channels}
            if block_ms and sample_rate_hz:
                asked["blocksize"] = frames(sample_rate_hz)
            return stream_factory(**{k: v for k, v in asked.items() if v is not None}, **callbacks)
        if input_file is not None:
            source = FileInputStream(Path(input_file), speed=file_speed, **callbacks)
            file_rate = int(source.samplerate)
            if channels is not None and channels != source.channels:
                source.close()
                raise ValueError(f"--channels {channels} does not match the file's {source.channels}")
            if sample_rate_hz is not None and sample_rate_hz != file_rate:
                source.close()
                raise ValueError(f"--sample-rate {sample_rate_hz} does not match the file's {file_rate} Hz")
            if block_ms:
                source.blocksize = frames(file_rate)
                assert source._audio is not None
                source._audio.block_s = source.blocksize / file_rate
            return source
        device = resolve_input_device(input_device)
        self.device = device
        # Capture at what the device natively offers; the worker downmixes and resamples.
        rate = sample_rate_hz or int(round(device.default_rate_hz))
        chans = channels or min(device.channels, 2)
        return open_sounddevice_stream(device, rate, chans, frames(rate), self._on_audio, self._on_finished)

    def _on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on the audio thread: copy, count, enqueue; never block or decode here.
        now = self._clock()
        self._last_callback_s = now
        if self._stop_requested.is_set():
            return
        with self._lock:
            self.summary.blocks += 1
            if status is not None and getattr(status, "input_overflow", False):
                self.summary.overflowed_blocks += 1
            full = self._queued_frames + frames > self._max_queued_frames
        if full and getattr(self._stream, "blocking", False):
            # A file source waits for the worker (back-pressure) instead of losing audio.
            while full and not self._stop_requested.is_set():
                self._room.wait(0.05)
                self._room.clear()
                with self._lock:
                    full = self._queued_frames + frames > self._max_queued_frames
            if self._stop_requested.is_set():
                return
        with self._lock:
            if self._queued_frames + frames > self._max_queued_frames:
                self.summary.dropped_blocks += 1
                self.summary.dropped_s += frames / self.capture_rate_hz
                return
            self._queued_frames += frames
        self._queue.put(_Block(np.array(indata, dtype=np.float32, copy=True), now))

    def _on_finished(self) -> None:
        self._capture_finished.set()
        self._queue.put(_Stop())

    # -- control ------------------------------------------------------------------------------
    def close(self) -> None:
        """Releases the input of a session that will not run (after start, the worker does this)."""
        if self._worker is None:
            with contextlib.suppress(Exception):
                self._stream.close()

    def start(self) -> None:
        """Starts capture and the worker (idempotent)."""
        if self._worker is not None:
            return
        self._started_s = self._clock()
        self._last_callback_s = self._started_s
        self._worker = threading.Thread(target=self._work, name="streamcli-live-worker", daemon=True)
        self._worker.start()
        try:
            self._stream.start()
        except Exception as exc:
            self.stop("capture-failed")
            self._worker.join(timeout=10.0)
            message = str(exc).replace("\n", " ")
            raise DeviceError(f"cannot start audio capture: {message}") from None

    def stop(self, reason: str = "stopped") -> None:
        """Ends the session: the worker finalizes the partial text and publishes it."""
        if not self._stop_requested.is_set():
            self.summary.stop_reason = self.summary.stop_reason or reason
            self._stop_requested.set()
        self._queue.put(_Stop())

    def events(self, timeout_s: float | None = None) -> Iterator[LiveEvent]:
        """Yields events until the session has ended; re-raises a worker error after the last event.

        May be called again after being interrupted (e.g. by KeyboardInterrupt) to drain the rest.
        """
        self.start()
        deadline = None if timeout_s is None else self._clock() + timeout_s
        while True:
            if deadline is not None and self._clock() > deadline:
                self.stop("timeout")
                deadline = None
            try:
                item = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _Stop):
                self._events.put(item)  # keep the end marker for any later drain
                return
            if isinstance(item, BaseException):
                self._events.put(_Stop())
                raise item
            yield item

    def run(self, on_event: Callable[[LiveEvent], None] | None = None) -> LiveSummary:
        """Runs to the end and returns the summary. If ``on_event`` fails (a full disk under ``-o``),
        the session is stopped and its worker joined before the error propagates: no thread is left
        running inside onnxruntime while the interpreter exits."""
        try:
            for event in self.events():
                if on_event is not None:
                    on_event(event)
        except BaseException:
            self.stop("error")
            self.join(timeout_s=10.0)
            raise
        return self.summary

    def join(self, timeout_s: float | None = None) -> None:
        """Waits for the worker to finish (after stop() or the end of input)."""
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=timeout_s)

    # -- worker -------------------------------------------------------------------------------
    def _work(self) -> None:
        _Worker(self).run()


class LevelMeter:
    """Input level over the last 0.2 s of captured blocks (dBFS), for the status line."""

    def __init__(self, rate_hz: int) -> None:
        self._window = max(1, int(0.2 * rate_hz))
        self._blocks: deque[tuple[int, float]] = deque()  # (frames, summed energy)
        self._frames = 0

    def add(self, block: np.ndarray) -> None:
        energy = float(np.square(block, dtype=np.float64).sum() / max(1, block.shape[1]))
        self._blocks.append((block.shape[0], energy))
        self._frames += block.shape[0]
        while self._frames - self._blocks[0][0] >= self._window:
            self._frames -= self._blocks.popleft()[0]

    def dbfs(self) -> float:
        frames = sum(n for n, _ in self._blocks)
        energy = sum(e for _, e in self._blocks)
        rms = math.sqrt(energy / frames) if frames else 0.0
        return 20.0 * math.log10(max(rms, 1e-10))


class TokenLatency:
    """Audio-to-text latency per token: a token at stream time t was heard when the block holding t
    arrived, and is shown when the first pass decodes it. Bounded: the newest blocks and latencies."""

    KEEP_BLOCKS = 4096

    def __init__(self) -> None:
        self._block_end_s: deque[float] = deque(maxlen=self.KEEP_BLOCKS)  # stream time each block reaches
        self._arrival_s: deque[float] = deque(maxlen=self.KEEP_BLOCKS)  # and the wall clock it arrived at
        self.rolling: deque[float] = deque(maxlen=LATENCY_WINDOW_TOKENS)  # for the status line
        self.all_ms = Recent()  # for the summary
        self.max_ms: float | None = None

    def fed(self, end_s: float, arrival_s: float) -> None:
        self._block_end_s.append(end_s)
        self._arrival_s.append(arrival_s)

    def decoded(self, token_starts_s: list[float], decoded_s: float) -> None:
        for start in token_starts_s:
            i = bisect.bisect_left(self._block_end_s, start - 1e-9)
            latency_ms = (decoded_s - self._arrival_s[min(i, len(self._arrival_s) - 1)]) * 1000.0
            self.all_ms.append(latency_ms)
            self.rolling.append(latency_ms)
            self.max_ms = latency_ms if self.max_ms is None else max(self.max_ms, latency_ms)


class _Worker:
    """One session's worker thread: blocks from the capture queue -> the one audio door -> the streaming
    driver; the level meter, latency record, recording and status are observers of what flows."""

    def __init__(self, session: LiveTranscriber) -> None:
        self.session = session
        rec = session.recognizer
        self.model_rate = int(rec.info.sample_rate)
        self.stream = rec.create_stream()
        name = session.device.name if session.device is not None else "input"
        self.converter = AudioConverter(session.capture_rate_hz, self.model_rate, name)
        self.meter = LevelMeter(session.capture_rate_hz)
        self.latency = TokenLatency()
        self.recording = session._recording
        self.fed_samples = 0
        self.captured_frames = 0
        self.decode_s = 0.0
        self.last_partial = ""
        self.last_status_s = 0.0
        duration_s = session.duration_s
        self.limit_frames = None if duration_s is None else int(round(duration_s * session.capture_rate_hz))
        # Finals come from the recognizer's batched second-pass worker, in order, while capture and
        # the first pass go on; each is shown when it is ready. With refinements the partial is the
        # second pass's view of the words being spoken (streamcli.refine).
        refine = RefineConfig() if session.refine else None
        self.driver = StreamDriver(self.stream, on_partial=self.publish_partial, on_segment=self.final,
                                   finals=rec.finals_worker(), refine=refine)

    # -- what the driver tells -------------------------------------------------------------------
    def publish_partial(self, result: Result) -> None:
        if result.text != self.last_partial or result.committed:
            self.last_partial = result.text
            self.session._events.put(PartialEvent(result.text, result.committed, result.tentative))

    def final(self, segment: Segment) -> None:
        self.session.summary.segments += 1
        self.session._events.put(SegmentEvent(segment))

    def cleared(self) -> None:
        self.last_partial = ""
        self.session._events.put(PartialEvent(""))

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        session = self.session
        error: BaseException | None = None
        try:
            while (block := self.next_block()) is not None:
                self.process(block)
                if self.limit_frames is not None and self.captured_frames >= self.limit_frames:
                    session.summary.stop_reason = session.summary.stop_reason or "duration"
                    break
        except BaseException as exc:  # reported to the consumer after finalizing what we have
            error = exc
        finally:
            session._stop_requested.set()
            with contextlib.suppress(Exception):
                session._stream.stop()
            with contextlib.suppress(Exception):
                session._stream.close()
        try:
            self.flush()
        except BaseException as exc:
            error = error or exc
        self.end(error)

    def next_block(self) -> _Block | None:
        """The next captured block; None when capture ended, was stopped, or stalled."""
        session = self.session
        while True:
            try:
                item = session._queue.get(timeout=0.05)
            except queue.Empty:
                self.driver.take_finals()
                # Opening can take a while (an audio server's stream start-up is ~1-2 s), so the first
                # block gets a longer grace than the gaps between blocks.
                allowed_s = (
                    session.stall_timeout_s
                    if session.summary.blocks
                    else max(session.stall_timeout_s, FIRST_BLOCK_TIMEOUT_S)
                )
                stalled = session._clock() - session._last_callback_s > allowed_s
                if stalled and not session._stop_requested.is_set():
                    session.summary.stop_reason = "device-stalled"
                    return None
                continue
            if isinstance(item, _Stop):
                if session._stop_requested.is_set() or session._capture_finished.is_set():
                    return None
                continue
            with session._lock:
                session._queued_frames -= item.samples.shape[0]
            session._room.set()
            return item

    def process(self, item: _Block) -> None:
        block = item.samples
        if self.limit_frames is not None and self.captured_frames + block.shape[0] >= self.limit_frames:
            block = block[: self.limit_frames - self.captured_frames]
        self.captured_frames += block.shape[0]
        self.meter.add(block)
        self.feed(self.converter.process(block), item.arrival_s)
        self.decode_ready()
        now = self.session._clock()
        if now - self.last_status_s >= self.session.status_interval_s:
            self.last_status_s = now
            self.session._events.put(StatusEvent(self.status()))

    def feed(self, samples: np.ndarray, arrival_s: float) -> None:
        if samples.size == 0:
            return
        if self.recording is not None:
            self.recording.write(samples)
        self.stream.accept_waveform(self.model_rate, samples)
        self.fed_samples += samples.shape[0]
        self.latency.fed(self.fed_samples / self.model_rate, arrival_s)

    def decode_ready(self) -> None:
        # The one streaming loop (StreamDriver): endpoints apply per window, not per block, since a
        # large block (or a backlog) may hold an endpoint inside.
        clock = self.session._clock
        while True:
            t0 = clock()
            window = self.driver.step()
            if window is None:
                break
            decoded_s = clock()
            self.decode_s += decoded_s - t0
            self.latency.decoded([tok.start for tok in window.tokens], decoded_s)
            self.session.summary.tokens += len(window.tokens)
            if window.closed:
                self.driver.take_finals()  # a final already done is shown before the partial clears
                if self.driver.refiner is None:  # refining, the driver keeps the words until the final
                    self.cleared()
        self.driver.take_finals()

    def rtf(self) -> float | None:
        return self.decode_s / (self.fed_samples / self.model_rate) if self.fed_samples else None

    def status(self) -> LiveStatus:
        session = self.session
        return LiveStatus(
            audio_s=self.captured_frames / session.capture_rate_hz,
            level_dbfs=self.meter.dbfs(),
            latency_p50_ms=percentile_ms(self.latency.rolling, 50),
            latency_p95_ms=percentile_ms(self.latency.rolling, 95),
            rtf=self.rtf(),
            provider=session.summary.provider,
            overflowed_blocks=session.summary.overflowed_blocks,
            dropped_blocks=session.summary.dropped_blocks,
            segments=session.summary.segments,
        )

    def flush(self) -> None:
        """The resampler's tail, then the recognizer's padding so the last words decode; every final."""
        self.feed(self.converter.flush(), self.session._clock())
        self.driver.input_finished()
        self.decode_ready()
        self.driver.close_utterance()
        self.driver.take_finals(wait=True)
        self.cleared()

    def end(self, error: BaseException | None) -> None:
        """The summary, the last status, then the error (if any) and the end marker."""
        session = self.session
        summary = session.summary
        if self.recording is not None:
            with contextlib.suppress(Exception):
                self.recording.close()
        file_error = getattr(session._stream, "error", None)
        if error is None and isinstance(file_error, AudioError):
            error = file_error  # a file cut short mid-session: its own line, the text so far kept
        if not summary.stop_reason:
            ended = bool(getattr(session._stream, "end_of_input", False)) or file_error is not None
            summary.stop_reason = "end-of-input" if ended else "device-lost"
        summary.audio_s = self.captured_frames / session.capture_rate_hz
        summary.wall_s = session._clock() - session._started_s
        summary.latencies_ms = list(self.latency.all_ms)
        summary.latency_p50_ms = percentile_ms(summary.latencies_ms, 50)
        summary.latency_p95_ms = percentile_ms(summary.latencies_ms, 95)
        summary.latency_max_ms = self.latency.max_ms
        summary.rtf = self.rtf()
        session._events.put(StatusEvent(self.status()))
        if error is None and summary.stop_reason in ("device-lost", "device-stalled"):
            what = "stopped delivering audio" if summary.stop_reason == "device-stalled" else "went away"
            name = session.device.name if session.device is not None else "input"
            error = DeviceError(
                f"audio input {name!r} {what} after {summary.audio_s:.1f} s; finalized text was kept"
            )
        if error is not None:
            session._events.put(error)
        session._events.put(_Stop())
        session._done.set()


@contextlib.contextmanager
def stop_on_sigint(session: LiveTranscriber) -> Iterator[None]:
    """First Ctrl-C asks the session to finalize and stop; a second one aborts (KeyboardInterrupt).

    Only installs the handler in the main thread (signals are delivered there only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if session._stop_requested.is_set():
            raise KeyboardInterrupt
        session.stop("interrupted")

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def summary_dict(summary: LiveSummary) -> dict[str, Any]:
    """The summary as JSON-ready values (the per-token latency list left out)."""
    data = {k: v for k, v in summary.__dict__.items() if k != "latencies_ms"}
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()}
