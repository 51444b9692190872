"""The results of a bench run as dataclasses, and their JSON form (the --json file's schema)."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from streamcli.bench.config import FLATNESS_TARGET, FRAME_MS


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
    """Cost of the finals: time from the endpoint decision to the final text, per segment, with
    ``streams`` real-time streams sharing the batched second-pass worker (and its refinements of the
    open utterances, when ``refine``: a final a refinement already holds needs no decode of its own)."""

    audio_seconds: float
    segments: int
    final_ms_p50: float
    final_ms_p95: float
    final_ms_max: float
    ms_per_segment_mean: float  # worker busy time (finals + refinements) per final segment
    ms_per_audio_s: float  # second-pass milliseconds (finals + refinements) per second of audio
    streams: int = 1  # real-time streams whose finals shared the worker
    segments_per_s: float = 0.0  # final segments per second of the worker's busy time
    batch_mean: float = 1.0  # mean rows per batched call for finals (0: every final came from a refinement)
    refine: bool = False  # refinements of the open utterances ran (live's and serve's default)
    refine_ms_per_audio_s: float = 0.0  # the refinements' share of ms_per_audio_s


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
    flatness_target: float = FLATNESS_TARGET  # flat in N: flatness_ratio at most this
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
