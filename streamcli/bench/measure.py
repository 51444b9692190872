"""The timing measurements: window time over stream length, batched streams, real-time emission,
and the full-context baseline."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamcli.bench.audio import LoopedAudio, LoopedReader
from streamcli.bench.config import FRAME_MS, SAMPLE_RATE, ProgressFn, no_progress
from streamcli.bench.schema import EmissionLatency, LengthPoint, StreamsPoint
from streamcli.errors import ModelError
from streamcli.features import compute_features
from streamcli.recognizer import StreamDriver, decode_batch
from streamcli.results import Result

if TYPE_CHECKING:
    from streamcli.recognizer import Recognizer


class _TimedStream:
    """A recognizer stream fed hop-sized blocks, driven like transcribe/live drive one.

    Each window's time = features of its audio + decode() + the endpoint check (and the utterance
    reset when an endpoint fires). The reset matters for honesty in both directions: without it the
    hypothesis of a 600 s stream would grow without bound, which no real session lets happen
    (rule 3 closes an utterance at 20 s at the latest).
    """

    def __init__(self, recognizer: Recognizer, reader: LoopedReader, hop_samples: int) -> None:
        self.driver = StreamDriver(recognizer.create_stream())
        self.reader = reader
        self.hop_samples = hop_samples
        self.fed_samples = 0
        self._pending_feature_ms = 0.0
        # encoder call + search of each window, as the recognizer times it (no features, no endpoint)
        self.encoder_ms: list[float] = []

    @property
    def position_s(self) -> float:
        return self.fed_samples / SAMPLE_RATE

    def step(self) -> list[float]:
        """Feeds one hop of audio, decodes every ready window; returns each window's ms."""
        block = self.reader.take(self.hop_samples)
        t0 = time.perf_counter()
        self.driver.stream.accept_waveform(SAMPLE_RATE, block)
        self._pending_feature_ms += (time.perf_counter() - t0) * 1000.0
        self.fed_samples += block.size
        times = []
        while True:
            t0 = time.perf_counter()
            if self.driver.step() is None:  # decode + endpoint check (+ the reset when one fires)
                break
            times.append((time.perf_counter() - t0) * 1000.0 + self._pending_feature_ms)
            self._pending_feature_ms = 0.0
            self.encoder_ms.append(self.driver.stream.chunk_times_ms[-1])
        return times


def measure_growth(
    recognizer: Recognizer,
    audio: LoopedAudio,
    hop_frames: int,
    lengths_s: Sequence[float],
    windows_per_length: int,
    warmup_windows: int,
    progress: ProgressFn = no_progress,
    label: str = "streaming",
) -> tuple[list[float], list[LengthPoint]]:
    """Advances one stream per length to that position by real decoding, then measures round-robin.

    Returns all window times (warm-up excluded) and one LengthPoint per length (without the baseline).
    """
    hop_samples = int(round(hop_frames * FRAME_MS * SAMPLE_RATE / 1000.0))
    hop_s = hop_samples / SAMPLE_RATE
    advance_steps = [math.ceil(length / hop_s) for length in lengths_s]
    # Every position measures windows_per_length windows; a few extra steps cover the fbank delay.
    total = sum(advance_steps) + len(lengths_s) * (windows_per_length + 2) + warmup_windows
    done = 0
    progress(label, done, total)
    all_times: list[float] = []
    # Warm-up on a throw-away stream: onnxruntime allocates and plans on the first calls.
    warm = _TimedStream(recognizer, audio.reader(0), hop_samples)
    for _ in range(warmup_windows):
        warm.step()
        done += 1
        progress(label, done, total)
    streams = []
    for i, steps in enumerate(advance_steps):
        ts = _TimedStream(recognizer, audio.reader(i * 7919 * 16), hop_samples)
        for _ in range(steps):
            all_times.extend(ts.step())
            done += 1
            if done % 10 == 0:
                progress(label, done, total)
        streams.append(ts)
    per_position: list[list[float]] = [[] for _ in lengths_s]
    encoder_from = [len(ts.encoder_ms) for ts in streams]
    # Round-robin, starting each round at the next position, so that load from other processes
    # (and whatever runs between rounds) lands on all positions alike.
    guard = 0
    while any(len(p) < windows_per_length for p in per_position):
        order = [(guard + k) % len(streams) for k in range(len(streams))]
        for i in order:
            ts = streams[i]
            if len(per_position[i]) >= windows_per_length:
                continue
            times = ts.step()
            per_position[i].extend(times)
            all_times.extend(times)
            done += 1
        progress(label, min(done, total), total)
        guard += 1
        if guard > 4 * windows_per_length + 10:
            raise ModelError("the recognizer stopped producing windows while being fed audio")
    progress(label, total, total)
    points = [
        LengthPoint(
            seconds=float(length),
            t_proc_ms_p50=float(np.percentile(times[:windows_per_length], 50)),
            t_proc_ms_p95=float(np.percentile(times[:windows_per_length], 95)),
            t_proc_ms_min=float(np.min(times[:windows_per_length])),
            t_encoder_ms_p50=float(np.median(ts.encoder_ms[start : start + windows_per_length])),
            windows=len(times[:windows_per_length]),
        )
        for length, times, ts, start in zip(lengths_s, per_position, streams, encoder_from, strict=True)
    ]
    return all_times, points


def measure_streams(
    recognizer: Recognizer,
    audio: LoopedAudio,
    hop_frames: int,
    max_streams: int,
    windows: int,
    warmup_windows: int,
    progress: ProgressFn = no_progress,
) -> list[StreamsPoint]:
    """Batch sizes 1, 2, 4, ... up to max_streams (and max_streams itself), one batched call per hop.

    Stops after the first size that does not keep up.
    """
    hop_samples = int(round(hop_frames * FRAME_MS * SAMPLE_RATE / 1000.0))
    hop_ms = hop_samples * 1000.0 / SAMPLE_RATE
    sizes = sorted({2**k for k in range(max_streams.bit_length()) if 2**k <= max_streams} | {max_streams})
    total = sum(windows + warmup_windows + 2 for _ in sizes)
    done = 0
    label = f"{max_streams} streams"
    progress(label, done, total)
    points = []
    for size in sizes:
        drivers = [StreamDriver(recognizer.create_stream()) for _ in range(size)]
        readers = [audio.reader(k * 104729) for k in range(size)]
        step_times: list[float] = []
        steps = 0
        while len(step_times) < windows + warmup_windows:
            t0 = time.perf_counter()
            for d, r in zip(drivers, readers, strict=True):
                d.stream.accept_waveform(SAMPLE_RATE, r.take(hop_samples))
            # What the server does per tick: one batched call, then each stream's per-window rules.
            decoded = decode_batch(recognizer, drivers)
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if decoded:
                step_times.append(elapsed_ms)
            steps += 1
            done += 1
            progress(label, min(done, total), total)
            if steps > 2 * (windows + warmup_windows) + 10:
                raise ModelError("the recognizer stopped producing windows while being fed audio")
        measured = step_times[warmup_windows:]
        p50, p95 = (float(v) for v in np.percentile(measured, [50, 95]))
        points.append(
            StreamsPoint(
                streams=size,
                t_proc_ms_p50=p50,
                t_proc_ms_p95=p95,
                rtf=float(np.mean(measured)) / hop_ms,
                keeps_up=p95 < hop_ms,
                windows=len(measured),
            )
        )
        if not points[-1].keeps_up:
            break  # a bigger batch only takes longer: the sizes above cannot keep up either
    progress(label, total, total)
    return points


def measure_emission(
    recognizer: Recognizer,
    audio: LoopedAudio,
    seconds: float,
    block_ms: float,
    progress: ProgressFn = no_progress,
) -> EmissionLatency:
    """Feeds audio at real-time pace in blocks; latency = emission wall time - (start + token time).

    A block's samples count as arrived when its last sample would have been captured, as from a
    microphone. If decoding falls behind, blocks queue up and the latency grows: that is measured too.
    """
    block_samples = max(1, int(round(block_ms * SAMPLE_RATE / 1000.0)))
    n_blocks = max(1, math.ceil(seconds * SAMPLE_RATE / block_samples))
    reader = audio.reader(0)
    shown_at = [0.0]  # when the newest partial was published (before any endpoint's second pass)

    def shown(_: Result) -> None:
        shown_at[0] = time.perf_counter()

    driver = StreamDriver(recognizer.create_stream(), on_partial=shown)
    latencies: list[float] = []
    label = f"real-time run {seconds:g} s"
    progress(label, 0, n_blocks)
    start = time.perf_counter()
    for b in range(n_blocks):
        due = start + (b + 1) * block_samples / SAMPLE_RATE
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        driver.stream.accept_waveform(SAMPLE_RATE, reader.take(block_samples))
        while (window := driver.step()) is not None:
            latencies.extend((shown_at[0] - start - tok.start) * 1000.0 for tok in window.tokens)
        if b % 10 == 0:
            progress(label, b, n_blocks)
    driver.input_finished()
    after_end = 0
    while (window := driver.step()) is not None:
        after_end += len(window.tokens)
    progress(label, n_blocks, n_blocks)
    arr = np.asarray(latencies, dtype=np.float64)
    return EmissionLatency(
        audio_seconds=n_blocks * block_samples / SAMPLE_RATE,
        block_ms=block_samples * 1000.0 / SAMPLE_RATE,
        tokens=int(arr.size),
        p50_ms=float(np.percentile(arr, 50)) if arr.size else None,
        p95_ms=float(np.percentile(arr, 95)) if arr.size else None,
        max_ms=float(arr.max()) if arr.size else None,
        tokens_after_end=after_end,
    )


class FullContextEncoder:
    """The wctc encoder file called with all frames so far as x and 0-length caches.

    It uses the recognizer's own onnxruntime session (same file, provider and threads). With empty
    caches every frame of x attends to every other frame (a chunk's own frames are all visible to
    each other), which is what re-encoding the whole stream at each hop costs.
    """

    def __init__(self, recognizer: Recognizer) -> None:
        from streamcli.families.wctc import cache_shape

        self.session = recognizer.session
        self.feature_type = recognizer.info.feature_type
        # The cache layout the family read from the model's metadata at load (read once).
        self.subsampling = recognizer.subsampling
        specs = recognizer.cache_specs
        names = recognizer.cache_names
        self.caches = {n: np.zeros(cache_shape(specs[n], 1, 0, self.subsampling), np.float32) for n in names}

    def encode_ms(self, features: np.ndarray) -> float:
        """One call on (T, 80) features (T trimmed to a multiple of the subsampling); wall ms."""
        usable = (features.shape[0] // self.subsampling) * self.subsampling
        feeds = {"x": np.ascontiguousarray(features[None, :usable], dtype=np.float32), **self.caches}
        t0 = time.perf_counter()
        self.session.run(None, feeds)
        return (time.perf_counter() - t0) * 1000.0


def measure_full_context(
    encoder: FullContextEncoder,
    audio: LoopedAudio,
    lengths_s: Sequence[float],
    reps: int,
    budget_s: float,
    progress: ProgressFn = no_progress,
) -> list[tuple[float | None, int, int, str | None]]:
    """(median ms, reps done, frames, failure) per length; reps stop early once a length used budget_s.

    A call that fails (onnxruntime cannot allocate the N^2 attention, say) ends the baseline: that
    length and the longer ones get the one-line reason instead of a number.
    """
    longest = max(lengths_s)
    feats = compute_features(audio.take(0, int(longest * SAMPLE_RATE)), encoder.feature_type, SAMPLE_RATE)
    encoder.encode_ms(feats[: 20 * encoder.subsampling])  # warm-up
    out = []
    total = len(lengths_s) * reps
    done = 0
    progress("full-context baseline", done, total)
    failure: str | None = None
    for length in lengths_s:
        frames = min(feats.shape[0], int(round(length * 1000.0 / FRAME_MS)))
        frames -= frames % encoder.subsampling
        if failure is not None:
            out.append((None, 0, frames, failure))
            continue
        times: list[float] = []
        spent_s = 0.0
        for _ in range(reps):
            try:
                times.append(encoder.encode_ms(feats[:frames]))
            except Exception as exc:  # onnxruntime raises its own types (e.g. allocation failures)
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failure = f"baseline failed at {length:g} s: {text[:200]}"
                break
            spent_s += times[-1] / 1000.0
            done += 1
            progress("full-context baseline", done, total)
            if spent_s > budget_s:
                break
        done = min(total, done + reps - len(times))
        progress("full-context baseline", done, total)
        if failure is not None:
            out.append((None, 0, frames, failure))
        else:
            out.append((float(np.median(times)), len(times), frames, None))
    return out
