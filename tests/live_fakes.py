"""Test doubles for the live pipeline: an input stream shaped like sounddevice.InputStream and a tiny
recognizer with the streamcli Stream verbs (energy per chunk -> one token), so the capture/queue/worker
machinery is tested without a model or a sound card.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamcli.endpoint import EndpointConfig, EndpointDetector
from streamcli.results import Result, Segment, Token


@dataclass(frozen=True)
class FakeFlags:
    input_overflow: bool = False


class FakeInputStream:
    """Delivers ``samples`` (frames, channels) in blocks whose sizes cycle through ``block_sizes``.

    ``overflow_blocks``: block indices flagged input_overflow, as PortAudio does after losing data.
    ``vanish_after``: stop after that many blocks and call finished_callback, as when a USB mic is
    pulled (PortAudio ends the stream). ``stall_after``: stop calling back at all, without finishing.
    ``block_delay_s``: pause between blocks (0 = as fast as the consumer takes them).
    """

    def __init__(
        self,
        samples: np.ndarray,
        samplerate: int,
        block_sizes: Iterable[int],
        *,
        callback: Callable[..., None],
        finished_callback: Callable[[], None],
        overflow_blocks: Iterable[int] = (),
        vanish_after: int | None = None,
        stall_after: int | None = None,
        block_delay_s: float = 0.0,
        **_: Any,
    ) -> None:
        data = np.asarray(samples, dtype=np.float32)
        self.data = data[:, None] if data.ndim == 1 else data
        self.samplerate = float(samplerate)
        self.channels = self.data.shape[1]
        self.block_sizes = list(block_sizes)
        self.overflow_blocks = set(overflow_blocks)
        self.vanish_after = vanish_after
        self.stall_after = stall_after
        self.block_delay_s = block_delay_s
        self.callback = callback
        self.finished_callback = finished_callback
        self.end_of_input = False
        self.delivered_blocks = 0
        self.delivered_sizes: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pos = 0
        i = 0
        while pos < self.data.shape[0] and not self._stop.is_set():
            if self.stall_after is not None and i >= self.stall_after:
                self._stop.wait()  # hangs like a dead device: no callbacks, no finish
                return
            if self.vanish_after is not None and i >= self.vanish_after:
                break
            size = self.block_sizes[i % len(self.block_sizes)]
            block = self.data[pos : pos + size]
            flags = FakeFlags(input_overflow=i in self.overflow_blocks)
            self.callback(block, block.shape[0], None, flags)
            self.delivered_sizes.append(block.shape[0])
            pos += block.shape[0]
            i += 1
            self.delivered_blocks = i
            if self.block_delay_s:
                time.sleep(self.block_delay_s)
        self.end_of_input = pos >= self.data.shape[0]
        if not self._stop.is_set():
            self.finished_callback()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


@dataclass
class FakeInfo:
    sample_rate: int = 16000
    provider: str = "FakeExecutionProvider"
    name: str = "fake-energy-model"


class FakeStream:
    """One token per 0.1 s chunk whose RMS exceeds 0.05; token text = chunk index (time-determined,
    so the transcript does not depend on how the audio was cut into blocks)."""

    chunk_s = 0.1

    def __init__(self, endpoint: EndpointConfig, decode_delay_s: float, rate: int) -> None:
        self.rate = rate
        self.chunk = int(self.chunk_s * rate)
        self.samples = np.zeros(0, dtype=np.float32)
        self.decoded = 0  # samples decoded
        self.finished = False
        self.tokens: list[Token] = []
        self.utterance_start_s = 0.0
        self.endpoint = EndpointDetector(endpoint, sample_rate=rate)
        self.decode_delay_s = decode_delay_s
        self.accepted_block_sizes: list[int] = []
        self.hypothesis_changed = False  # tokens are only appended, so decode()'s list says it all

    @property
    def received_s(self) -> float:
        return self.samples.size / self.rate

    @property
    def decoded_s(self) -> float:
        return self.decoded / self.rate

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        assert sample_rate == self.rate
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.accepted_block_sizes.append(samples.size)
        self.samples = np.concatenate([self.samples, samples])
        self.endpoint.accept_waveform(samples)

    def input_finished(self) -> None:
        pad = (-self.samples.size) % self.chunk
        self.samples = np.concatenate([self.samples, np.zeros(pad, dtype=np.float32)])
        self.finished = True

    def is_ready(self) -> bool:
        return self.samples.size - self.decoded >= self.chunk

    def decode(self) -> list[Token]:
        if self.decode_delay_s:
            time.sleep(self.decode_delay_s)
        chunk = self.samples[self.decoded : self.decoded + self.chunk]
        index = self.decoded // self.chunk
        start = self.decoded / self.rate
        self.decoded += self.chunk
        if float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2))) > 0.05:
            token = Token(text=f"w{index}", start=start, id=index)
            self.tokens.append(token)
            return [token]
        return []

    def new_tokens(self) -> list[Token]:
        raise AssertionError("a single fake stream is driven through decode(), never batched")

    def result(self) -> Result:
        return Result(text=" ".join(t.text for t in self.tokens), tokens=list(self.tokens))

    def is_endpoint(self) -> bool:
        return self.endpoint.is_endpoint(
            utterance_start_s=self.utterance_start_s,
            last_token_s=self.tokens[-1].start + self.chunk_s if self.tokens else None,
            decoded_s=self.decoded_s,
            has_text=bool(self.tokens),
        )

    def reset(self) -> Segment | None:
        tokens, self.tokens = self.tokens, []
        start, self.utterance_start_s = self.utterance_start_s, self.decoded_s
        if not tokens:
            return None
        return Segment(start=start, end=self.decoded_s, text=" ".join(t.text for t in tokens), tokens=tokens)


class FakeRecognizer:
    def __init__(self, endpoint: EndpointConfig | None = None, decode_delay_s: float = 0.0) -> None:
        self.info = FakeInfo()
        self.endpoint = endpoint or EndpointConfig()
        self.decode_delay_s = decode_delay_s
        self.streams: list[FakeStream] = []

    def create_stream(self) -> FakeStream:
        stream = FakeStream(self.endpoint, self.decode_delay_s, self.info.sample_rate)
        self.streams.append(stream)
        return stream

    def finals_worker(self) -> None:
        return None  # one pass: the fake's finals are written on closing


def bursts(rate: int, pattern: list[tuple[float, float]], channels: int = 1) -> np.ndarray:
    """Tone bursts: [(seconds, amplitude), ...] of a 300 Hz sine; amplitude 0 = digital silence plus
    faint noise (so the energy detector sees a floor)."""
    rng = np.random.default_rng(0)
    parts = []
    for seconds, amplitude in pattern:
        n = int(round(seconds * rate))
        t = np.arange(n) / rate
        parts.append(amplitude * np.sin(2 * np.pi * 300 * t) + 1e-4 * rng.standard_normal(n))
    mono = np.concatenate(parts).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono
