"""File transcription: audio blocks -> a recognizer stream -> finalized segments, as a generator.

::

    from streamcli import RecognizerConfig, create_recognizer, transcribe

    recognizer = create_recognizer(RecognizerConfig(model="models/..."))
    segments, info = transcribe("talk.flac", recognizer, on_partial=lambda r: print(r.text))
    print(info.audio.duration_s)
    for segment in segments:
        print(f"[{segment.start:.2f} -> {segment.end:.2f}] {segment.text}")

The input is read block by block (:mod:`streamcli.audio`), so text flows while the file is still being
read and memory does not grow with its length. A segment is yielded at every endpoint
(:mod:`streamcli.endpoint` rules, applied by the one streaming loop,
:class:`streamcli.recognizer.StreamDriver`) and at the end of the input. ``on_partial`` receives the
current hypothesis after every encoder call that changed it. ``realtime=True`` feeds the audio no
faster than 1x wall-clock time, as a live source would.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from streamcli.audio import DEFAULT_BLOCK_S, FILE_BLOCK_S, AudioConverter, AudioInfo, AudioSource, open_audio
from streamcli.recent import Recent
from streamcli.recognizer import RecognizerLike, StreamDriver
from streamcli.refine import RefineConfig
from streamcli.results import Result, Segment


@dataclass
class TranscriptionInfo:
    """What :func:`transcribe` knows of its input at once (``audio``, ``provider``) and the clocks it
    keeps while the segments are consumed (the CLI footer reads them)."""

    audio: AudioInfo | None = None
    provider: str = ""
    audio_s: float = 0.0  # seconds of audio fed to the recognizer so far
    elapsed_s: float = 0.0  # wall-clock seconds since the start
    paced_s: float = 0.0  # of which spent waiting for the 1x pace (--realtime)
    chunk_times_ms: Recent = field(default_factory=Recent)  # encoder call times (ms), the newest
    segments: int = 0

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time (without --realtime waits) / audio time (< 1: faster)."""
        busy_s = max(0.0, self.elapsed_s - self.paced_s)
        return busy_s / self.audio_s if self.audio_s > 0 else 0.0

    def chunk_ms_percentile(self, q: float) -> float:
        return float(np.percentile(list(self.chunk_times_ms), q)) if self.chunk_times_ms else 0.0


def _array_blocks(
    samples: np.ndarray, rate: int, model_rate: int, block_frames: int
) -> Iterator[np.ndarray]:
    """An array (mono or (frames, channels)) at ``rate`` as model-rate blocks, through the one door."""
    converter = AudioConverter(rate, model_rate, "samples")
    for start in range(0, samples.shape[0], block_frames):
        out = converter.process(samples[start : start + block_frames])
        if out.size:
            yield out
    tail = converter.flush()
    if tail.size:
        yield tail


def transcribe(
    source: str | os.PathLike[str] | BinaryIO | np.ndarray,
    recognizer: RecognizerLike,
    *,
    realtime: bool = False,
    on_partial: Callable[[Result], None] | None = None,
    sample_rate: int | None = None,
    block_s: float | None = None,
    stdin: BinaryIO | None = None,
    refine: bool | None = None,
) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """Streams ``source`` through a new stream of ``recognizer``: ``(segments, info)``.

    ``source``: a file path, ``"-"`` (WAV on stdin, or ``stdin`` if given), a binary WAV stream, or a
    float32 array in [-1, 1] (mono or (frames, channels)) at ``sample_rate`` (default: the model's).
    The input is opened here (a missing or unreadable file raises now, with ``info.audio`` known
    before any decoding); ``segments`` is a generator that decodes as it is consumed, and ``info``'s
    clocks advance with it. Segments with no text (an endpoint in silence) are not yielded. Errors in
    the audio raise :class:`streamcli.errors.AudioError` from the generator; segments yielded before
    stay valid.

    ``refine`` (two-pass models; default: with ``realtime``): ``on_partial`` receives the second
    pass's refinement of the open utterance (committed + tentative words, :mod:`streamcli.refine`)
    instead of the first pass. Off, a file runs at full speed: refinements would only cost time there.
    """
    if block_s is None:
        block_s = _default_block_s(source, realtime)
    info = TranscriptionInfo(provider=recognizer.info.provider)
    model_rate = int(recognizer.info.sample_rate)
    if isinstance(source, np.ndarray):
        in_rate = int(sample_rate or model_rate)
        block_frames = max(1, round(block_s * in_rate))
        blocks: Iterator[np.ndarray] = _array_blocks(source, in_rate, model_rate, block_frames)
        channels = 1 if source.ndim == 1 else source.shape[1]
        info.audio = AudioInfo("<array>", in_rate, channels, source.shape[0], "", "")
        audio = None
    else:
        audio = open_audio(source, target_rate=model_rate, block_s=block_s, stdin=stdin)
        info.audio = audio.info
        blocks = audio.blocks()
    refine_config = RefineConfig() if (realtime if refine is None else refine) else None
    # Every block is float32 mono at the model's rate by now (audio.AudioConverter).
    segments = _segments(recognizer, blocks, audio, model_rate, realtime, on_partial, info, refine_config)
    return segments, info


def _default_block_s(source: object, realtime: bool) -> float:
    """Blocks of FILE_BLOCK_S from a regular file; DEFAULT_BLOCK_S from a pipe, stdin or at 1x.

    A file is read ahead of decoding anyway, and fewer, larger reads cost less (fewer calls into the
    decoder, features computed in runs); a pipe may be a live source, where a block is a wait.
    """
    if isinstance(source, np.ndarray) and not realtime:
        return FILE_BLOCK_S
    if realtime or not isinstance(source, (str, os.PathLike)):
        return DEFAULT_BLOCK_S
    if str(source) == "-":
        return DEFAULT_BLOCK_S
    try:
        return FILE_BLOCK_S if stat.S_ISREG(os.stat(source).st_mode) else DEFAULT_BLOCK_S
    except OSError:
        return DEFAULT_BLOCK_S  # open_audio reports the problem


def _segments(
    recognizer: RecognizerLike,
    blocks: Iterator[np.ndarray],
    audio: AudioSource | None,
    rate: int,
    realtime: bool,
    on_partial: Callable[[Result], None] | None,
    info: TranscriptionInfo,
    refine: RefineConfig | None,
) -> Iterator[Segment]:
    stream = recognizer.create_stream()
    # Finals are written by the recognizer's batched second-pass worker while the first pass goes on;
    # they are yielded in order as they become ready.
    driver = StreamDriver(stream, on_partial=on_partial, finals=recognizer.finals_worker(), refine=refine)
    info.chunk_times_ms = stream.chunk_times_ms
    start_wall = time.perf_counter()
    fed_samples = 0
    try:
        for block in blocks:
            if realtime:
                # Pace input at 1x: block k may enter only once its audio time has passed.
                ahead_s = fed_samples / rate - (time.perf_counter() - start_wall)
                if ahead_s > 0:
                    time.sleep(ahead_s)
                    info.paced_s += ahead_s
            stream.accept_waveform(rate, block)
            fed_samples += block.shape[0]
            info.audio_s = fed_samples / rate
            for segment in driver.segments_ready():
                info.segments = driver.segments
                info.elapsed_s = time.perf_counter() - start_wall
                yield segment
            info.elapsed_s = time.perf_counter() - start_wall
        for segment in driver.finish_segments():
            info.segments = driver.segments
            yield segment
    finally:
        if audio is not None:
            audio.close()
        info.elapsed_s = time.perf_counter() - start_wall
