"""The audio the timing runs loop over: a file, the model's test wavs, or speech-like noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamcli.bench.config import SAMPLE_RATE


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
