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
        rec = self.recognizer
        model_rate = int(rec.info.sample_rate)
        stream = rec.create_stream()
        name = self.device.name if self.device is not None else "input"
        converter = AudioConverter(self.capture_rate_hz, model_rate, name)

        # Latency bookkeeping: for each block fed, the stream time (s) its last sample reaches and the
        # wall clock it arrived at; a token at stream time t was heard when the block holding t arrived.
        block_end_s: list[float] = []
        block_arrival_s: list[float] = []
        fed_samples = 0
        captured_frames = 0
        decode_s = 0.0
        rolling: deque[float] = deque(maxlen=LATENCY_WINDOW_TOKENS)
        level: deque[tuple[int, float]] = deque()
        level_frames = 0
        level_window = max(1, int(0.2 * self.capture_rate_hz))
        last_partial = ""
        last_status_s = 0.0
        error: BaseException | None = None
        limit_frames = None if self.duration_s is None else int(round(self.duration_s * self.capture_rate_hz))

        recording = self._recording

        def feed(samples: np.ndarray, arrival_s: float) -> None:
            nonlocal fed_samples
            if samples.size == 0:
                return
            if recording is not None:
                recording.write(samples)
            stream.accept_waveform(model_rate, samples)
            fed_samples += samples.shape[0]
            block_end_s.append(fed_samples / model_rate)
            block_arrival_s.append(arrival_s)

        def publish_partial(result: Result) -> None:
            nonlocal last_partial
            if result.text != last_partial or result.committed:
                last_partial = result.text
                self._events.put(PartialEvent(result.text, result.committed, result.tentative))

        def final(segment: Segment) -> None:
            self.summary.segments += 1
            self._events.put(SegmentEvent(segment))

        # Finals come from the recognizer's batched second-pass worker, in order, while capture and
        # the first pass go on; each is shown when it is ready. With refinements the partial is the
        # second pass's view of the words being spoken (streamcli.refine).
        driver = StreamDriver(stream, on_partial=publish_partial, on_segment=final,
                              finals=rec.finals_worker(), refine=RefineConfig() if self.refine else None)

        def closed() -> None:
            nonlocal last_partial
            last_partial = ""
            self._events.put(PartialEvent(""))

        def decode_ready() -> None:
            # The one streaming loop (StreamDriver): endpoints apply per window, not per block, since
            # a large block (or a backlog) may hold an endpoint inside.
            nonlocal decode_s
            while True:
                t0 = self._clock()
                window = driver.step()
                if window is None:
                    break
                decoded_s = self._clock()
                decode_s += decoded_s - t0
                for tok in window.tokens:  # heard when its block arrived, decoded by the first pass now
                    i = bisect.bisect_left(block_end_s, tok.start - 1e-9)
                    arrival = block_arrival_s[min(i, len(block_arrival_s) - 1)]
                    latency_ms = (decoded_s - arrival) * 1000.0
                    self.summary.latencies_ms.append(latency_ms)
                    rolling.append(latency_ms)
                    self.summary.tokens += 1
                if window.closed:
                    driver.take_finals()  # a final already done is shown before the partial clears
                    if driver.refiner is None:  # refining, the driver keeps the words until the final
                        closed()
            driver.take_finals()

        def status(now: float) -> LiveStatus:
            frames = sum(n for n, _ in level)
            energy = sum(e for _, e in level)
            rms = math.sqrt(energy / frames) if frames else 0.0
            return LiveStatus(
                audio_s=captured_frames / self.capture_rate_hz,
                level_dbfs=20.0 * math.log10(max(rms, 1e-10)),
                latency_p50_ms=percentile_ms(rolling, 50),
                latency_p95_ms=percentile_ms(rolling, 95),
                rtf=decode_s / (fed_samples / model_rate) if fed_samples else None,
                provider=self.summary.provider,
                overflowed_blocks=self.summary.overflowed_blocks,
                dropped_blocks=self.summary.dropped_blocks,
                segments=self.summary.segments,
            )

        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    driver.take_finals()
                    now = self._clock()
                    # Opening can take a while (an audio server's stream start-up is ~1-2 s), so
                    # the first block gets a longer grace than the gaps between blocks.
                    allowed_s = (
                        self.stall_timeout_s
                        if self.summary.blocks
                        else max(self.stall_timeout_s, FIRST_BLOCK_TIMEOUT_S)
                    )
                    if now - self._last_callback_s > allowed_s and not self._stop_requested.is_set():
                        self.summary.stop_reason = "device-stalled"
                        break
                    continue
                if isinstance(item, _Stop):
                    if self._stop_requested.is_set() or self._capture_finished.is_set():
                        break
                    continue
                block = item.samples
                with self._lock:
                    self._queued_frames -= block.shape[0]
                self._room.set()
                if limit_frames is not None and captured_frames + block.shape[0] >= limit_frames:
                    block = block[: limit_frames - captured_frames]
                captured_frames += block.shape[0]
                energy = float(np.square(block, dtype=np.float64).sum() / max(1, block.shape[1]))
                level.append((block.shape[0], energy))
                level_frames += block.shape[0]
                while level_frames - level[0][0] >= level_window:
                    level_frames -= level.popleft()[0]
                feed(converter.process(block), item.arrival_s)
                decode_ready()
                now = self._clock()
                if now - last_status_s >= self.status_interval_s:
                    last_status_s = now
                    self._events.put(StatusEvent(status(now)))
                if limit_frames is not None and captured_frames >= limit_frames:
                    self.summary.stop_reason = self.summary.stop_reason or "duration"
                    break
        except BaseException as exc:  # reported to the consumer after finalizing what we have
            error = exc
        finally:
            self._stop_requested.set()
            with contextlib.suppress(Exception):
                self._stream.stop()
            with contextlib.suppress(Exception):
                self._stream.close()
        try:
            # Flush: the resampler tail, then the recognizer's padding so the last words decode.
            tail_arrival = self._clock()
            feed(converter.flush(), tail_arrival)
            driver.input_finished()
            decode_ready()
            driver.close_utterance()
            driver.take_finals(wait=True)
            closed()
        except BaseException as exc:
            error = error or exc
        if recording is not None:
            with contextlib.suppress(Exception):
                recording.close()
        file_error = getattr(self._stream, "error", None)
        if error is None and isinstance(file_error, AudioError):
            error = file_error  # a file cut short mid-session: its own line, the text so far kept
        if not self.summary.stop_reason:
            ended = bool(getattr(self._stream, "end_of_input", False)) or file_error is not None
            self.summary.stop_reason = "end-of-input" if ended else "device-lost"
        self.summary.audio_s = captured_frames / self.capture_rate_hz
        self.summary.wall_s = self._clock() - self._started_s
        lat = self.summary.latencies_ms
        self.summary.latency_p50_ms = percentile_ms(lat, 50)
        self.summary.latency_p95_ms = percentile_ms(lat, 95)
        self.summary.latency_max_ms = max(lat) if lat else None
        self.summary.rtf = decode_s / (fed_samples / model_rate) if fed_samples else None
        self._events.put(StatusEvent(status(self._clock())))
        if error is None and self.summary.stop_reason in ("device-lost", "device-stalled"):
            what = "stopped delivering audio" if self.summary.stop_reason == "device-stalled" else "went away"
            name = self.device.name if self.device is not None else "input"
            error = DeviceError(
                f"audio input {name!r} {what} after {self.summary.audio_s:.1f} s; finalized text was kept"
            )
        if error is not None:
            self._events.put(error)
        self._events.put(_Stop())
        self._done.set()


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
