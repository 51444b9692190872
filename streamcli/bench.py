"""Latency benchmark of streaming encoders: how long until text appears, does it keep up, what it costs.

The latency model of windowed streaming attention: audio becomes 10 ms feature frames; each encoder
call consumes hop = W - O new frames (the O overlap frames enter only through the cached keys/values),
so a frame waits up to hop x 10 ms (on average hop x 5 ms) for its window to fill and then one window's
processing time T_proc. With a cache T_proc stays the same however long the stream runs; a full-context
encoder that re-encodes everything so far at each hop gets slower as the stream grows. This module
measures both on real encoder calls:

- T_proc per window (features of the hop + encoder call + search + endpoint check, wall clock) over
  long streams, with separate streams advanced to each requested position (``lengths_s``) by real
  decoding, so the cache state at 600 s is the real one; the positions are then measured
  round-robin so machine noise hits every position alike;
- the full-context baseline: the same ONNX file called with all frames so far as ``x`` and empty
  (0-length) caches (windowed-CTC models only);
- K streams batched into one call (``Recognizer.decode_streams``), emission latency in a real-time
  paced run, WER/CER on a manifest, and the same zipformer files through sherpa-onnx (``peer``).

Everything here runs on onnxruntime; torch and matplotlib are never imported at module level.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamcli.errors import DeviceError, ModelError, StreamcliError

if TYPE_CHECKING:
    from streamcli.recognizer import ModelInfo, Recognizer

FRAME_MS = 10.0
SAMPLE_RATE = 16000
WCTC_FAMILY = "wctc"

# (label, completed, total): the CLI turns it into a progress bar; the library never prints.
ProgressFn = Callable[[str, int, int], None]


def _no_progress(label: str, completed: int, total: int) -> None:
    return None


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. ``windows``/``overlaps`` None = the model's own W/O (trained default or native)."""

    model: str | None  # folder or registry name; None = the shipped default model
    devices: tuple[str, ...] = ("auto",)
    threads: int = 0
    windows: tuple[int, ...] | None = None
    overlaps: tuple[int, ...] | None = None
    lengths_s: tuple[float, ...] = (10.0, 60.0, 600.0)
    windows_per_length: int = 40
    warmup_windows: int = 3
    streams: int = 1
    realtime_s: float = 10.0
    realtime_block_ms: float = 20.0
    second_pass_s: float = 60.0  # audio streamed through the two-pass recognizer for final latency
    audio: str | None = None
    data: str | None = None
    data_limit: int | None = None
    peer: str | None = None
    peer_seconds: float = 30.0
    full_context: bool = True
    full_context_reps: int = 3
    # After the first rep at a length, further reps only while that length's total stays under this.
    full_context_budget_s: float = 15.0
    # Full attention over N frames costs time and memory ~N^2: with the 4-layer d=144 encoder 600 s
    # took one 91 s call and ~11 GB (60 s: 1.3 s), so longer positions are opt-in.
    full_context_max_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("--device: give at least one device (cpu, cuda, cuda:N, auto)")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = onnxruntime default), got {self.threads}")
        for name, values in (("--window", self.windows), ("--overlap", self.overlaps)):
            if values is not None and (not values or any(v < 0 for v in values)):
                raise ValueError(f"{name} needs non-negative frame counts, got {values}")
        if not self.lengths_s or any(not math.isfinite(s) or s <= 0 for s in self.lengths_s):
            raise ValueError(f"--lengths needs positive seconds, got {self.lengths_s}")
        if list(self.lengths_s) != sorted(set(self.lengths_s)):
            raise ValueError(f"--lengths must be increasing and distinct, got {self.lengths_s}")
        if self.windows_per_length < 1:
            raise ValueError(f"windows per length must be >= 1, got {self.windows_per_length}")
        if self.warmup_windows < 0:
            raise ValueError(f"warm-up windows must be >= 0, got {self.warmup_windows}")
        if self.streams < 1:
            raise ValueError(f"--streams must be >= 1, got {self.streams}")
        if self.realtime_s < 0 or self.realtime_block_ms <= 0:
            raise ValueError("--realtime-seconds must be >= 0 and the block length > 0")
        if self.peer is not None and self.peer != "sherpa-onnx":
            raise ValueError(f"--peer: only 'sherpa-onnx' is supported, got {self.peer!r}")
        if self.peer_seconds <= 0:
            raise ValueError(f"peer seconds must be > 0, got {self.peer_seconds}")
        if self.full_context_reps < 1:
            raise ValueError(f"full-context reps must be >= 1, got {self.full_context_reps}")
        if self.full_context_max_s <= 0:
            raise ValueError(f"--full-context-max-s must be > 0, got {self.full_context_max_s}")
        if self.data_limit is not None and self.data_limit < 1:
            raise ValueError(f"--data-limit must be >= 1, got {self.data_limit}")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'50,100,200' -> (50, 100, 200); a clear ValueError naming the option otherwise."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option}: expected at least one number, got {text!r}")
    return values


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{option}: expected at least one number, got {text!r}")
    return values


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(part.strip() for part in text.split(",") if part.strip())
    if not devices:
        raise ValueError(f"--device: expected e.g. 'cpu' or 'cpu,cuda', got {text!r}")
    return devices


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass
class Percentiles:
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Percentiles:
        if not values_ms:
            raise ValueError("no samples to summarize")
        arr = np.asarray(values_ms, dtype=np.float64)
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return cls(p50=float(p50), p95=float(p95), p99=float(p99), max=float(arr.max()))


@dataclass
class LengthPoint:
    """T_proc per window with the stream at ``seconds``, next to re-encoding everything so far."""

    seconds: float
    t_proc_ms_p50: float
    t_proc_ms_p95: float
    t_proc_ms_min: float
    # The encoder call + search alone (the recognizer's own chunk timing): like for like with the
    # full-context baseline, which is one encoder call without features.
    t_encoder_ms_p50: float
    windows: int
    full_context_ms_p50: float | None = None
    full_context_reps: int = 0
    full_context_frames: int | None = None
    full_context_note: str | None = None  # why there is no baseline number at this position


@dataclass
class StreamsPoint:
    """``streams`` streams batched into one encoder call per hop."""

    streams: int
    t_proc_ms_p50: float  # one batched step: features of every stream + the batched call + search
    t_proc_ms_p95: float
    rtf: float  # mean step time / hop duration (< 1: the batch keeps pace on average)
    keeps_up: bool  # p95 step time < hop duration: every stream gets its window in time
    windows: int


@dataclass
class EmissionLatency:
    """Real-time paced run: per emitted token, wall-clock emission time minus the token's audio time."""

    audio_seconds: float
    block_ms: float
    tokens: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    tokens_after_end: int  # emitted only by the end-of-input flush, not counted above


@dataclass
class Accuracy:
    manifest: str
    utterances: int
    audio_seconds: float
    wer: float
    cer: float
    rtf: float | None  # None when the manifest holds no audio
    # Two-pass models: ``wer``/``cer``/``rtf`` are the finals; these the streaming first pass alone.
    first_pass_wer: float | None = None
    first_pass_cer: float | None = None
    first_pass_rtf: float | None = None


@dataclass
class SecondPass:
    """Cost of the finals: time from the endpoint decision to the final text, per segment."""

    audio_seconds: float
    segments: int
    final_ms_p50: float
    final_ms_p95: float
    final_ms_max: float
    ms_per_segment_mean: float
    ms_per_audio_s: float  # second-pass milliseconds per second of audio


@dataclass
class PeerComparison:
    peer: str
    peer_version: str
    audio_seconds: float
    threads: int
    ours_rtf: float
    peer_rtf: float
    ratio: float  # ours_rtf / peer_rtf: < 1 means we are faster
    texts_match: bool  # same greedy result from both runtimes on the same files
    ours_words: int
    peer_words: int


@dataclass
class ConfigResult:
    """One (device, W, O) configuration. Skipped ones carry ``reason`` and None for the measurements."""

    status: str  # "ok" or "skipped"
    reason: str | None
    model: str
    family: str | None
    device: str
    provider: str | None
    threads: int | None
    window_frames: int
    overlap_frames: int
    hop_frames: int
    frame_ms: float = FRAME_MS
    lookahead_frames: int = 0
    t_wait_ms: float | None = None
    t_wait_mean_ms: float | None = None
    t_proc_ms: Percentiles | None = None
    total_ms: dict[str, float] | None = None
    rtf: float | None = None
    keeps_up: bool | None = None
    cache_bytes: int | None = None
    peak_rss_mb: float | None = None
    full_context_peak_rss_mb: float | None = None
    windows_measured: int = 0
    audio: str | None = None
    model_files: list[str] = field(default_factory=list)  # the files really loaded (int8 or float)
    per_length: list[LengthPoint] = field(default_factory=list)
    flatness_ratio: float | None = None  # T_proc p50 at the last position / at the first
    full_context_growth: float | None = None
    streams: list[StreamsPoint] = field(default_factory=list)
    streams_keeping_up: int | None = None
    emission: EmissionLatency | None = None
    accuracy: Accuracy | None = None
    second_pass: SecondPass | None = None
    peer: PeerComparison | None = None
    peer_error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def results_to_json(results: Iterable[ConfigResult]) -> list[dict]:
    return [asdict(r) for r in results]


def write_json(results: Iterable[ConfigResult], path: str | os.PathLike[str]) -> None:
    """Atomic write (tmp file in the same folder + os.replace); creates the folder if needed."""
    from streamcli.formats import write_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(results_to_json(results), indent=2) + "\n")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------------
# Audio used for timing


class LoopedAudio:
    """Test audio repeated as often as needed; each reader keeps its own position."""

    def __init__(self, samples: np.ndarray, source: str) -> None:
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if samples.size < SAMPLE_RATE // 10:
            raise ValueError(f"{source}: need at least 0.1 s of audio to benchmark")
        self.samples = samples
        self.source = source

    def reader(self, offset_samples: int = 0) -> LoopedReader:
        return LoopedReader(self.samples, offset_samples % self.samples.size)

    def take(self, start: int, count: int) -> np.ndarray:
        return self.reader(start).take(count)


class LoopedReader:
    def __init__(self, samples: np.ndarray, position: int) -> None:
        self._samples = samples
        self._position = position

    def take(self, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.float32)
        filled = 0
        size = self._samples.size
        while filled < count:
            part = self._samples[self._position : self._position + count - filled]
            out[filled : filled + part.size] = part
            filled += part.size
            self._position = (self._position + part.size) % size
        return out


def synthetic_speechlike(seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """Deterministic noise with a speech-like spectrum tilt and 4 Hz syllable-rate envelope.

    The encoders' compute does not depend on what the audio says, so this serves for timing when no
    real audio is given; token emission (and so emission latency) does depend on it.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    # Roughly the long-term speech spectrum: flat to ~500 Hz, then falling ~6 dB per octave.
    tilted = np.fft.irfft(spectrum / (1.0 + freqs / 500.0), n).astype(np.float32)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t)) ** 2
    signal = tilted * envelope
    return (0.3 * signal / max(float(np.abs(signal).max()), 1e-6)).astype(np.float32)


def load_bench_audio(audio: str | None, model_dir: Path) -> LoopedAudio:
    """--audio if given, else the model folder's test_wavs/*.wav, else synthetic speech-like noise."""
    from streamcli.audio import read_audio

    if audio is not None:
        samples, _ = read_audio(audio, target_rate=SAMPLE_RATE)
        return LoopedAudio(samples, audio)
    wavs = sorted((model_dir / "test_wavs").glob("*.wav")) if model_dir.is_dir() else []
    if wavs:
        parts = [read_audio(w, target_rate=SAMPLE_RATE)[0] for w in wavs]
        return LoopedAudio(np.concatenate(parts), f"{model_dir.name}/test_wavs ({len(wavs)} files, looped)")
    return LoopedAudio(synthetic_speechlike(), "synthetic speech-like noise (looped)")


# ---------------------------------------------------------------------------------------------------
# Measurement primitives


class _TimedStream:
    """A recognizer stream fed hop-sized blocks, driven like transcribe/live drive one.

    Each window's time = features of its audio + decode() + the endpoint check (and the utterance
    reset when an endpoint fires). The reset matters for honesty in both directions: without it the
    hypothesis of a 600 s stream would grow without bound, which no real session lets happen
    (rule 3 closes an utterance at 20 s at the latest).
    """

    def __init__(self, recognizer: Recognizer, reader: LoopedReader, hop_samples: int) -> None:
        self.stream = recognizer.create_stream()
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
        self.stream.accept_waveform(SAMPLE_RATE, block)
        self._pending_feature_ms += (time.perf_counter() - t0) * 1000.0
        self.fed_samples += block.size
        times = []
        while True:
            t0 = time.perf_counter()
            ready = self.stream.is_ready()
            if not ready:
                break
            self.stream.decode()
            if self.stream.is_endpoint():
                self.stream.reset()
            times.append((time.perf_counter() - t0) * 1000.0 + self._pending_feature_ms)
            self._pending_feature_ms = 0.0
            self.encoder_ms.append(self.stream.chunk_times_ms[-1])
        return times


def measure_growth(
    recognizer: Recognizer,
    audio: LoopedAudio,
    hop_frames: int,
    lengths_s: Sequence[float],
    windows_per_length: int,
    warmup_windows: int,
    progress: ProgressFn = _no_progress,
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
    progress: ProgressFn = _no_progress,
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
        streams = [recognizer.create_stream() for _ in range(size)]
        readers = [audio.reader(k * 104729) for k in range(size)]
        step_times: list[float] = []
        steps = 0
        while len(step_times) < windows + warmup_windows:
            t0 = time.perf_counter()
            for s, r in zip(streams, readers, strict=True):
                s.accept_waveform(SAMPLE_RATE, r.take(hop_samples))
            ready = [s for s in streams if s.is_ready()]
            if ready:
                recognizer.decode_streams(ready)
                for s in ready:  # what a server does per stream after the batched call
                    s.new_tokens()
                    if s.is_endpoint():
                        s.reset()
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
            if ready:
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
    progress: ProgressFn = _no_progress,
) -> EmissionLatency:
    """Feeds audio at real-time pace in blocks; latency = emission wall time - (start + token time).

    A block's samples count as arrived when its last sample would have been captured, as from a
    microphone. If decoding falls behind, blocks queue up and the latency grows: that is measured too.
    """
    block_samples = max(1, int(round(block_ms * SAMPLE_RATE / 1000.0)))
    n_blocks = max(1, math.ceil(seconds * SAMPLE_RATE / block_samples))
    reader = audio.reader(0)
    stream = recognizer.create_stream()
    latencies: list[float] = []
    label = f"real-time run {seconds:g} s"
    progress(label, 0, n_blocks)
    start = time.perf_counter()
    for b in range(n_blocks):
        due = start + (b + 1) * block_samples / SAMPLE_RATE
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        stream.accept_waveform(SAMPLE_RATE, reader.take(block_samples))
        while stream.is_ready():
            tokens = stream.decode()
            now = time.perf_counter()
            latencies.extend((now - start - tok.start) * 1000.0 for tok in tokens)
            if stream.is_endpoint():
                stream.reset()
        if b % 10 == 0:
            progress(label, b, n_blocks)
    after_end = len(stream.finish())
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


# ---------------------------------------------------------------------------------------------------
# Full-context baseline (windowed-CTC encoders)


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
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.subsampling = int(meta["subsampling"])
            names = json.loads(meta["cache_names"])
            specs = json.loads(meta["cache_shapes"])
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"{recognizer.info.path}: wctc metadata unusable for the baseline ({exc})"
            ) from None
        self.caches = {n: np.zeros(cache_shape(specs[n], 1, 0, self.subsampling), np.float32) for n in names}

    def encode_ms(self, features: np.ndarray) -> float:
        """One call on (T, 80) features (T trimmed to a multiple of the subsampling); wall ms."""
        usable = (features.shape[0] // self.subsampling) * self.subsampling
        feeds = {"x": np.ascontiguousarray(features[None, :usable], dtype=np.float32), **self.caches}
        t0 = time.perf_counter()
        self.session.run(None, feeds)
        return (time.perf_counter() - t0) * 1000.0


def compute_features(samples: np.ndarray, feature_type: str) -> np.ndarray:
    """(T, 80) features of the samples with the runtime's own extractor for the model's feature type."""
    from streamcli import features

    return features.compute_features(samples, feature_type, SAMPLE_RATE)


def measure_full_context(
    encoder: FullContextEncoder,
    audio: LoopedAudio,
    lengths_s: Sequence[float],
    reps: int,
    budget_s: float,
    progress: ProgressFn = _no_progress,
) -> list[tuple[float | None, int, int, str | None]]:
    """(median ms, reps done, frames, failure) per length; reps stop early once a length used budget_s.

    A call that fails (onnxruntime cannot allocate the N^2 attention, say) ends the baseline: that
    length and the longer ones get the one-line reason instead of a number.
    """
    longest = max(lengths_s)
    feats = compute_features(audio.take(0, int(longest * SAMPLE_RATE)), encoder.feature_type)
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


# ---------------------------------------------------------------------------------------------------
# Accuracy and the peer runtime


def read_manifest(path: str | os.PathLike[str]) -> list[tuple[str, Path, str]]:
    """TSV with a header naming at least id, path, transcript; relative paths are from its folder."""
    manifest = Path(path)
    if not manifest.is_file():
        raise ValueError(f"--data {path}: no such manifest file")
    lines = manifest.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise ValueError(f"--data {path}: empty manifest")
    header = lines[0].split("\t")
    try:
        i_id, i_path, i_text = header.index("id"), header.index("path"), header.index("transcript")
    except ValueError:
        raise ValueError(f"--data {path}: header must name the columns id, path and transcript") from None
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < len(header):
            raise ValueError(f"--data {path}:{n}: expected {len(header)} tab-separated columns")
        audio_path = Path(cols[i_path])
        rows.append(
            (
                cols[i_id],
                audio_path if audio_path.is_absolute() else manifest.parent / audio_path,
                cols[i_text],
            )
        )
    return rows


def _transcribe_rows(recognizer: Recognizer, rows: list[tuple[str, Path, str]], hop_frames: int,
                     progress: ProgressFn, label: str) -> tuple[list[str], float, float]:
    """(hypotheses, audio seconds, busy seconds): each file through streamcli.transcribe (the one
    streaming driver: endpoints, resets and, for a two-pass model, the finals), fed hop by hop."""
    from streamcli.audio import read_audio
    from streamcli.transcribe import transcribe

    hyps: list[str] = []
    audio_s = busy_s = 0.0
    block_s = hop_frames * FRAME_MS / 1000.0
    progress(label, 0, len(rows))
    for i, (_, path, _text) in enumerate(rows):
        samples, _ = read_audio(path, target_rate=SAMPLE_RATE)
        audio_s += samples.size / SAMPLE_RATE
        t0 = time.perf_counter()
        segments = transcribe(samples, recognizer, sample_rate=SAMPLE_RATE, block_s=block_s)
        hyps.append(" ".join(seg.text for seg in segments))
        busy_s += time.perf_counter() - t0
        progress(label, i + 1, len(rows))
    return hyps, audio_s, busy_s


def measure_accuracy(
    recognizer: Recognizer,
    manifest: str,
    hop_frames: int,
    limit: int | None,
    progress: ProgressFn = _no_progress,
    first_pass: Recognizer | None = None,
) -> Accuracy:
    """WER/CER of ``recognizer`` (the finals of a two-pass model) and, given ``first_pass`` (the same
    model with rescoring off), of the streaming first pass alone."""
    from streamcli.metrics import corpus_error_rates

    rows = read_manifest(manifest)[:limit]
    refs = [text for _, _, text in rows]
    hyps, audio_s, busy_s = _transcribe_rows(recognizer, rows, hop_frames, progress, "accuracy")
    rates = corpus_error_rates(zip(refs, hyps, strict=True))
    result = Accuracy(
        manifest=str(manifest),
        utterances=len(rows),
        audio_seconds=audio_s,
        wer=float(rates.wer),
        cer=float(rates.cer),
        rtf=busy_s / audio_s if audio_s else None,
    )
    if first_pass is not None:
        hyps, _, busy_s = _transcribe_rows(first_pass, rows, hop_frames, progress, "accuracy, first pass")
        rates = corpus_error_rates(zip(refs, hyps, strict=True))
        result.first_pass_wer, result.first_pass_cer = float(rates.wer), float(rates.cer)
        result.first_pass_rtf = busy_s / audio_s if audio_s else None
    return result


def measure_second_pass(recognizer: Recognizer, audio: LoopedAudio, seconds: float,
                        progress: ProgressFn = _no_progress) -> SecondPass | None:
    """Streams ``seconds`` of the bench audio through the two-pass recognizer (hop-sized blocks, as
    fast as possible) and reads the time of every final: endpoint decision -> final text."""
    from streamcli.transcribe import transcribe

    times = getattr(recognizer, "final_times_ms", None)
    if times is None:
        return None
    start = len(times)
    progress("second pass", 0, 1)
    samples = audio.take(0, int(seconds * SAMPLE_RATE))
    block_s = recognizer.info.shift_frames * FRAME_MS / 1000.0
    for _ in transcribe(samples, recognizer, sample_rate=SAMPLE_RATE, block_s=block_s):
        pass
    progress("second pass", 1, 1)
    finals = np.asarray(times[start:], dtype=float)
    if finals.size == 0:
        return None
    return SecondPass(
        audio_seconds=samples.size / SAMPLE_RATE,
        segments=int(finals.size),
        final_ms_p50=float(np.percentile(finals, 50)),
        final_ms_p95=float(np.percentile(finals, 95)),
        final_ms_max=float(finals.max()),
        ms_per_segment_mean=float(finals.mean()),
        ms_per_audio_s=float(finals.sum() / (samples.size / SAMPLE_RATE)),
    )


def _zipformer_files(model_dir: Path, used: Sequence[str]) -> tuple[Path, Path, Path, Path]:
    """The encoder/decoder/joiner files our runtime loaded (same files for the peer) and tokens.txt."""

    def pick(prefix: str) -> Path:
        found = [model_dir / n for n in used if Path(n).name.startswith(prefix)]
        if not found or not found[0].is_file():
            raise ModelError(f"{model_dir}: no {prefix}*.onnx for the peer runtime")
        return found[0]

    return pick("encoder"), pick("decoder"), pick("joiner"), model_dir / "tokens.txt"


def measure_peer(
    recognizer: Recognizer,
    audio: LoopedAudio,
    seconds: float,
    threads: int,
    files: tuple[Path, Path, Path, Path] | None = None,
    progress: ProgressFn = _no_progress,
) -> PeerComparison:
    """Same zipformer files, same audio, same threads, greedy search: our runtime vs sherpa-onnx."""
    try:
        import sherpa_onnx
    except ImportError:
        raise ModelError("--peer sherpa-onnx: the sherpa-onnx package is not installed") from None
    info = recognizer.info
    encoder, decoder, joiner, tokens = files or _zipformer_files(Path(info.path), info.files)
    samples = audio.take(0, int(seconds * SAMPLE_RATE))
    progress("peer sherpa-onnx", 0, 2)

    # Our input_finished() pads the tail so the last words are decoded; sherpa-onnx leaves that to the
    # caller, so its stream gets the same zeros and both decode the same input.
    tail_samples = [0]

    def ours() -> tuple[float, str]:
        t0 = time.perf_counter()
        s = recognizer.create_stream()
        s.accept_waveform(SAMPLE_RATE, samples)
        s.finish()
        tail_samples[0] = s.tail_padding_samples
        return time.perf_counter() - t0, s.result().text

    try:
        peer = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(tokens),
            encoder=str(encoder),
            decoder=str(decoder),
            joiner=str(joiner),
            num_threads=threads,
            sample_rate=SAMPLE_RATE,
            feature_dim=80,
            decoding_method="greedy_search",
            provider="cpu",
        )
    except Exception as exc:  # sherpa-onnx raises plain RuntimeError/ValueError with its own text
        raise ModelError(f"--peer sherpa-onnx could not load {encoder.parent}: {exc}") from None

    def theirs() -> tuple[float, str]:
        t0 = time.perf_counter()
        s = peer.create_stream()
        s.accept_waveform(SAMPLE_RATE, samples)
        s.accept_waveform(SAMPLE_RATE, np.zeros(tail_samples[0], dtype=np.float32))
        s.input_finished()
        while peer.is_ready(s):
            peer.decode_stream(s)
        return time.perf_counter() - t0, peer.get_result(s).strip()

    ours()  # warm-up both, then alternate so load from other processes hits both alike
    theirs()
    ours_s, theirs_s = [], []
    ours_text = theirs_text = ""
    for _ in range(3):
        t, ours_text = ours()
        ours_s.append(t)
        t, theirs_text = theirs()
        theirs_s.append(t)
    progress("peer sherpa-onnx", 2, 2)
    dur = samples.size / SAMPLE_RATE
    ours_rtf, peer_rtf = float(np.median(ours_s)) / dur, float(np.median(theirs_s)) / dur
    return PeerComparison(
        peer="sherpa-onnx",
        peer_version=str(getattr(sherpa_onnx, "__version__", "unknown")),
        audio_seconds=dur,
        threads=threads,
        ours_rtf=ours_rtf,
        peer_rtf=peer_rtf,
        ratio=ours_rtf / peer_rtf,
        texts_match=ours_text.split() == theirs_text.split(),
        ours_words=len(ours_text.split()),
        peer_words=len(theirs_text.split()),
    )


# ---------------------------------------------------------------------------------------------------
# Planning the sweep and running it


def plan_configs(
    family: str,
    native: tuple[int, int],
    windows: Sequence[int] | None,
    overlaps: Sequence[int] | None,
    subsampling: int,
    shift_frames: int | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """(valid (W, O) list, skipped (W, O, reason) list) for this model.

    wctc: every W x O pair with 0 <= O < W, both multiples of the subsampling. Fixed-chunk models
    (zipformer): only the native (W, O); any other request is explained and the native one measured.
    """
    native_w, native_o = native
    ws = list(windows) if windows is not None else [native_w]
    os_ = list(overlaps) if overlaps is not None else [native_o]
    valid: list[tuple[int, int]] = []
    skipped: list[tuple[int, int, str]] = []
    if family != WCTC_FAMILY:
        hop = shift_frames if shift_frames is not None else native_w - native_o
        for w in ws:
            for o in os_:
                if (w, o) != (native_w, native_o):
                    skipped.append(
                        (
                            w,
                            o,
                            (
                                f"{family} models have fixed chunking: native chunk {hop} frames "
                                f"({hop * FRAME_MS:g} ms) with {native_o} frames of left context "
                                f"(W={native_w}, O={native_o}); it was exported for that chunk "
                                f"and cannot run W={w}/O={o}, so it is measured at its native W/O instead"
                            ),
                        )
                    )
        return [(native_w, native_o)], skipped
    for w in ws:
        for o in os_:
            reason = None
            if w <= 0:
                reason = f"W={w}: the window must be at least {subsampling} frames"
            elif not 0 <= o < w:
                reason = f"O={o} >= W={w}: the overlap must be smaller than the window (hop = W-O > 0)"
            elif w % subsampling or o % subsampling:
                reason = (
                    f"W={w}/O={o}: both must be multiples of {subsampling} frames "
                    f"(the encoder stacks {subsampling} feature frames into one)"
                )
            if reason:
                skipped.append((w, o, reason))
            else:
                valid.append((w, o))
    return valid, skipped


def model_window(info: ModelInfo) -> tuple[int, int]:
    """(W, O) in bench terms: W = O + hop, so hop = W - O holds for every family.

    wctc reports its W/O directly. A zipformer's ModelInfo gives its native chunk (shift_frames,
    also its window_frames) and its left context (overlap_frames); its attention span is left
    context + chunk, which is what W means for wctc.
    """
    if info.family == WCTC_FAMILY:
        return int(info.window_frames), int(info.overlap_frames)
    return int(info.overlap_frames) + int(info.shift_frames), int(info.overlap_frames)


def _recognizer(
    model: str | None, device: str, threads: int, window: int | None, overlap: int | None,
    rescore: bool | None = False,
) -> Recognizer:
    """The streaming measurements run the first pass alone (rescore=False): a final is not part of
    any window's T_proc; the second pass is measured on its own (measure_second_pass)."""
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig

    cfg = RecognizerConfig(
        model=model, device=device, threads=threads, window_frames=window, overlap_frames=overlap,
        rescore=rescore,
    )
    return create_recognizer(cfg)


def _two_pass(model: str | None, device: str, threads: int, w: int, o: int) -> Recognizer | None:
    """The same model with its second pass, or None when it has none."""
    rec = _recognizer(model, device, threads, w, o, rescore=None)
    return rec if rec.info.second_pass else None


def _skipped(model: str | None, device: str, family: str | None, w: int, o: int, reason: str) -> ConfigResult:
    return ConfigResult(
        status="skipped",
        reason=reason,
        model=model or "default",
        family=family,
        device=device,
        provider=None,
        threads=None,
        window_frames=w,
        overlap_frames=o,
        hop_frames=w - o,
    )


def run_bench(config: BenchConfig, progress: ProgressFn = _no_progress) -> list[ConfigResult]:
    """Every (device, W, O) of the config; skipped configurations come back with their reason."""
    if config.data is not None:
        read_manifest(config.data)  # a bad manifest fails now, not after minutes of measuring
    results: list[ConfigResult] = []
    for device in config.devices:
        try:
            probe = _recognizer(config.model, device, config.threads, None, None)
        except DeviceError as exc:
            # The configurations this device would have run, named as on the devices that work.
            cpu_info = _recognizer(config.model, "cpu", config.threads, None, None).info
            valid, _ = plan_configs(
                cpu_info.family,
                model_window(cpu_info),
                config.windows,
                config.overlaps,
                int(cpu_info.subsampling),
                int(cpu_info.shift_frames),
            )
            results.extend(_skipped(config.model, device, cpu_info.family, w, o, str(exc)) for w, o in valid)
            continue
        info = probe.info
        valid, skipped = plan_configs(
            info.family,
            model_window(info),
            config.windows,
            config.overlaps,
            int(info.subsampling),
            int(info.shift_frames),
        )
        results.extend(_skipped(config.model, device, info.family, w, o, r) for w, o, r in skipped)
        audio = load_bench_audio(config.audio, Path(info.path))
        for w, o in valid:
            if info.family == WCTC_FAMILY and (w, o) != (info.window_frames, info.overlap_frames):
                try:
                    rec = _recognizer(config.model, device, config.threads, w, o)
                except ValueError as exc:
                    results.append(_skipped(config.model, device, info.family, w, o, str(exc)))
                    continue
            else:
                rec = probe
            results.append(measure_config(rec, device, config, audio, progress))
    return results


def measure_config(
    recognizer: Recognizer,
    device: str,
    config: BenchConfig,
    audio: LoopedAudio,
    progress: ProgressFn = _no_progress,
) -> ConfigResult:
    info = recognizer.info
    w, o = model_window(info)
    hop = int(info.shift_frames)
    lookahead = max(0, int(info.chunk_frames) - hop)
    hop_ms = hop * FRAME_MS
    tag = f"{device} W={w} O={o}"
    all_times, points = measure_growth(
        recognizer,
        audio,
        hop,
        config.lengths_s,
        config.windows_per_length,
        config.warmup_windows,
        progress,
        f"{tag} streaming",
    )
    rss_stream = peak_rss_mb()
    t_proc = Percentiles.of(all_times)
    # A frame waits for the rest of its hop (plus a fixed-chunk model's lookahead), then the window runs.
    t_wait = (hop + lookahead) * FRAME_MS
    t_wait_mean = (hop / 2 + lookahead) * FRAME_MS
    totals = t_wait + np.asarray(all_times)
    result = ConfigResult(
        status="ok",
        reason=None,
        model=info.name,
        family=info.family,
        device=device,
        provider=info.provider,
        threads=int(info.threads),
        window_frames=w,
        overlap_frames=o,
        hop_frames=hop,
        lookahead_frames=lookahead,
        t_wait_ms=t_wait,
        t_wait_mean_ms=t_wait_mean,
        t_proc_ms=t_proc,
        total_ms={"p50": float(np.percentile(totals, 50)), "p95": float(np.percentile(totals, 95))},
        rtf=float(np.mean(all_times)) / hop_ms,
        keeps_up=t_proc.p95 < hop_ms,
        cache_bytes=int(info.state_bytes),
        peak_rss_mb=rss_stream,
        windows_measured=len(all_times),
        audio=audio.source,
        model_files=list(info.files),
        per_length=points,
    )
    result.flatness_ratio = points[-1].t_proc_ms_p50 / points[0].t_proc_ms_p50
    if info.device_notice:
        result.notes.append(info.device_notice)
    if info.family == WCTC_FAMILY and config.full_context:
        encoder = FullContextEncoder(recognizer)
        short = [p for p in points if p.seconds <= config.full_context_max_s]
        for p in points[len(short) :]:
            p.full_context_note = (
                f"not measured: beyond --full-context-max-s {config.full_context_max_s:g} "
                "(full attention costs time and memory ~N^2)"
            )
        if short:
            measured = measure_full_context(
                encoder,
                audio,
                [p.seconds for p in short],
                config.full_context_reps,
                config.full_context_budget_s,
                progress,
            )
            for point, (ms, reps, frames, failure) in zip(short, measured, strict=True):
                point.full_context_ms_p50, point.full_context_reps = ms, reps
                point.full_context_frames, point.full_context_note = frames, failure
            done = [m[0] for m in measured if m[0] is not None]
            if done:
                result.full_context_growth = done[-1] / done[0]
            result.full_context_peak_rss_mb = peak_rss_mb()
        del encoder
    elif info.family != WCTC_FAMILY:
        result.notes.append(f"no full-context baseline: a {info.family} encoder only accepts its fixed chunk")
    if config.streams > 1:
        result.streams = measure_streams(
            recognizer, audio, hop, config.streams, config.windows_per_length, config.warmup_windows, progress
        )
        keeping = [p.streams for p in result.streams if p.keeps_up]
        result.streams_keeping_up = max(keeping) if keeping else 0
    if config.realtime_s > 0:
        result.emission = measure_emission(
            recognizer, audio, config.realtime_s, config.realtime_block_ms, progress
        )
    two_pass = None
    if info.family == WCTC_FAMILY:
        two_pass = _two_pass(config.model, device, config.threads, int(info.window_frames),
                             int(info.overlap_frames))
    if two_pass is not None and config.second_pass_s > 0:
        result.second_pass = measure_second_pass(two_pass, audio, config.second_pass_s, progress)
    if config.data is not None:
        if two_pass is not None:
            result.accuracy = measure_accuracy(two_pass, config.data, hop, config.data_limit, progress,
                                               first_pass=recognizer)
        else:
            result.accuracy = measure_accuracy(recognizer, config.data, hop, config.data_limit, progress)
    if config.peer is not None:
        if info.family == WCTC_FAMILY:
            result.peer_error = "--peer sherpa-onnx compares zipformer models only (sherpa-onnx has no wctc)"
        else:
            try:
                result.peer = measure_peer(
                    recognizer, audio, config.peer_seconds, int(info.threads), progress=progress
                )
            except StreamcliError as exc:
                result.peer_error = str(exc)
    return result


# ---------------------------------------------------------------------------------------------------
# Plot


def plot_latency(results: Sequence[ConfigResult], path: str | os.PathLike[str]) -> None:
    """Latency versus window, one line per (device, overlap).

    Left: total latency p50 (band to p95) with the waiting part as a dashed line. Right: the
    processing part T_proc alone (p50, band to p95), which the total's scale would hide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.ok]
    if not ok:
        raise ValueError("--plot: no measured configuration to plot")
    fig, (ax, ax_proc) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    groups: dict[tuple[str, int], list[ConfigResult]] = {}
    for r in ok:
        groups.setdefault((r.device, r.overlap_frames), []).append(r)
    for (device, overlap), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.window_frames)
        xs = [r.window_frames * FRAME_MS for r in rs]
        p50 = [r.total_ms["p50"] for r in rs]
        (line,) = ax.plot(xs, p50, marker="o", label=f"{device} O={overlap}: total p50")
        color = line.get_color()
        ax.fill_between(xs, p50, [r.total_ms["p95"] for r in rs], color=color, alpha=0.15)
        ax.plot(
            xs,
            [r.t_wait_ms for r in rs],
            linestyle="--",
            color=color,
            alpha=0.7,
            label=f"{device} O={overlap}: wait (hop x 10 ms)",
        )
        proc50 = [r.t_proc_ms.p50 for r in rs]
        ax_proc.plot(xs, proc50, marker="o", color=color, label=f"{device} O={overlap}")
        ax_proc.fill_between(xs, proc50, [r.t_proc_ms.p95 for r in rs], color=color, alpha=0.15)
    ax.set_xlabel("window W (ms)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{ok[0].model}: latency vs window (band p50..p95)")
    ax_proc.set_xlabel("window W (ms)")
    ax_proc.set_ylabel("T_proc per window (ms)")
    ax_proc.set_title("processing per window (band p50..p95)")
    for a in (ax, ax_proc):
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        # mkstemp made it 0600; a plot is an ordinary file (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
