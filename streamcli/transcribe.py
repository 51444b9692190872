"""File transcription: audio blocks -> a recognizer stream -> finalized segments, as a generator.

::

    from streamcli.recognizer import RecognizerConfig, create_recognizer
    from streamcli.transcribe import transcribe

    recognizer = create_recognizer(RecognizerConfig(model="models/..."))
    for segment in transcribe("talk.flac", recognizer, on_partial=lambda r: print(r.text)):
        print(f"[{segment.start:.2f} -> {segment.end:.2f}] {segment.text}")

The input is read block by block (:mod:`streamcli.audio`), so text flows while the file is still being
read and memory does not grow with its length. A segment is yielded at every endpoint
(:mod:`streamcli.endpoint` rules, checked by the stream) and at the end of the input. ``on_partial``
receives the current hypothesis after every encoder call. ``realtime=True`` feeds the audio no faster
than 1x wall-clock time, as a live source would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from streamcli.audio import DEFAULT_BLOCK_S, AudioInfo, open_audio
from streamcli.results import Result, Segment

if TYPE_CHECKING:
    from streamcli.recognizer import Recognizer, Stream


@dataclass
class TranscriptionStats:
    """Filled in while :func:`transcribe` runs (the CLI footer reads it from ``on_partial``)."""

    audio: AudioInfo | None = None
    provider: str = ""
    audio_s: float = 0.0  # seconds of audio fed to the recognizer so far
    elapsed_s: float = 0.0  # wall-clock seconds since the start
    paced_s: float = 0.0  # of which spent waiting for the 1x pace (--realtime)
    chunk_times_ms: list[float] = field(default_factory=list)  # one entry per encoder call
    segments: int = 0

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time (without --realtime waits) / audio time (< 1: faster)."""
        busy_s = max(0.0, self.elapsed_s - self.paced_s)
        return busy_s / self.audio_s if self.audio_s > 0 else 0.0

    def chunk_ms_percentile(self, q: float) -> float:
        return float(np.percentile(self.chunk_times_ms, q)) if self.chunk_times_ms else 0.0


def _array_blocks(samples: np.ndarray, block_frames: int) -> Iterator[np.ndarray]:
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:  # (frames, channels)
        samples = samples.mean(axis=1, dtype=np.float32)
    if not np.isfinite(samples).all():
        from streamcli.errors import AudioError

        raise AudioError("samples: invalid sample (NaN or Inf)")
    for start in range(0, samples.shape[0], block_frames):
        yield samples[start : start + block_frames]


def transcribe(
    source: str | os.PathLike[str] | BinaryIO | np.ndarray,
    recognizer: Recognizer,
    *,
    realtime: bool = False,
    on_partial: Callable[[Result], None] | None = None,
    sample_rate: int | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    stdin: BinaryIO | None = None,
    stats: TranscriptionStats | None = None,
) -> Iterator[Segment]:
    """Streams ``source`` through a new stream of ``recognizer`` and yields finalized segments.

    ``source``: a file path, ``"-"`` (WAV on stdin, or ``stdin`` if given), a binary WAV stream, or a
    float32 array in [-1, 1] (mono or (frames, channels)) at ``sample_rate`` (default: the model's).
    Segments with no text (an endpoint in silence) are not yielded. Errors in the audio raise
    :class:`streamcli.errors.AudioError`; segments yielded before stay valid.
    """
    stats = stats if stats is not None else TranscriptionStats()
    model_rate = int(recognizer.info.sample_rate)
    stats.provider = str(getattr(recognizer.info, "provider", ""))
    start_wall = time.perf_counter()

    if isinstance(source, np.ndarray):
        rate = int(sample_rate or model_rate)
        blocks: Iterator[np.ndarray] = _array_blocks(source, max(1, round(block_s * rate)))
        frames = source.shape[0]
        stats.audio = AudioInfo("<array>", rate, 1 if source.ndim == 1 else source.shape[1], frames, "", "")
        audio = None
    else:
        audio = open_audio(source, target_rate=model_rate, block_s=block_s, stdin=stdin)
        stats.audio = audio.info
        rate = model_rate
        blocks = audio.blocks()

    stream = recognizer.create_stream()
    fed_samples = 0

    def drain() -> Iterator[Segment]:
        while stream.is_ready():
            stream.decode()
            _update(stats, stream, start_wall)
            if on_partial is not None:
                on_partial(stream.result())
            if stream.is_endpoint():
                segment = stream.reset()
                if segment is not None and segment.text.strip():
                    stats.segments += 1
                    yield segment

    try:
        for block in blocks:
            if realtime:
                # Pace input at 1x: block k may enter only once its audio time has passed.
                ahead_s = fed_samples / rate - (time.perf_counter() - start_wall)
                if ahead_s > 0:
                    time.sleep(ahead_s)
                    stats.paced_s += ahead_s
            stream.accept_waveform(rate, block)
            fed_samples += block.shape[0]
            stats.audio_s = fed_samples / rate
            yield from drain()
        stream.input_finished()
        yield from drain()
        segment = stream.reset()
        _update(stats, stream, start_wall)
        if segment is not None and segment.text.strip():
            stats.segments += 1
            yield segment
    finally:
        if audio is not None:
            audio.close()
        stats.elapsed_s = time.perf_counter() - start_wall


def _update(stats: TranscriptionStats, stream: Stream, start_wall: float) -> None:
    stats.elapsed_s = time.perf_counter() - start_wall
    times = getattr(stream, "chunk_times_ms", None)
    if times is not None:
        stats.chunk_times_ms = list(times) if not isinstance(times, list) else times
