"""Endpointing: when has an utterance ended?

Three rules in the style of sherpa-onnx, checked in order:

- rule 1: trailing silence >= ``rule1_min_trailing_silence_s`` (2.4 s) and nothing decoded yet;
- rule 2: trailing silence >= ``rule2_min_trailing_silence_s`` (1.2 s) after some text was decoded;
- rule 3: utterance length >= ``rule3_min_utterance_length_s`` (20 s), whatever was said.

Trailing silence can be measured two ways, chosen by ``EndpointConfig.silence_from``:

- ``"decoder"``: decoded time since the last emitted token (what sherpa-onnx does; needs a trained model);
- ``"audio"``: time since the last frame an energy detector (:class:`SpeechDetector`) called speech;
- ``"either"`` (default): the larger of the two, so a clean recording ends an utterance even when the
  decoder keeps emitting noise tokens, and noisy audio still ends one when the decoder falls silent;
- ``"both"``: the smaller of the two (both must agree).

Hook used by ``Stream.is_endpoint()`` (recognizer.py) and by ``streamcli live``::

    detector = EndpointDetector(config, sample_rate=16000)
    detector.accept_waveform(samples)          # every block of model-rate mono float32 samples
    detector.is_endpoint(utterance_start_s=..., last_token_s=... or None,
                         decoded_s=..., has_text=...)   # -> bool
    detector.last_rule                         # 1, 2, 3 or None: which rule fired last

All times are absolute seconds from the start of the stream; the detector never resets its clock, so
after ``Stream.reset()`` the caller only passes the new ``utterance_start_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

SilenceSource = Literal["decoder", "audio", "either", "both"]
_SILENCE_SOURCES = ("decoder", "audio", "either", "both")


@dataclass(frozen=True)
class EndpointConfig:
    """Endpoint rules; validated on construction (ValueError with the offending field)."""

    enabled: bool = True
    rule1_min_trailing_silence_s: float = 2.4
    rule2_min_trailing_silence_s: float = 1.2
    rule3_min_utterance_length_s: float = 20.0
    silence_from: SilenceSource = "either"
    # Energy detector settings (used when silence_from is not "decoder").
    speech_margin_db: float = 12.0
    speech_min_level_dbfs: float = -55.0

    def __post_init__(self) -> None:
        for name in (
            "rule1_min_trailing_silence_s",
            "rule2_min_trailing_silence_s",
            "rule3_min_utterance_length_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"EndpointConfig.{name} must be a finite number of seconds, got {value!r}")
            if value <= 0:
                raise ValueError(f"EndpointConfig.{name} must be > 0 seconds, got {value}")
        if self.silence_from not in _SILENCE_SOURCES:
            raise ValueError(
                f"EndpointConfig.silence_from must be one of {', '.join(_SILENCE_SOURCES)}, "
                f"got {self.silence_from!r}"
            )
        if not math.isfinite(self.speech_margin_db) or self.speech_margin_db <= 0:
            raise ValueError(f"EndpointConfig.speech_margin_db must be > 0 dB, got {self.speech_margin_db}")
        if not math.isfinite(self.speech_min_level_dbfs) or self.speech_min_level_dbfs >= 0:
            raise ValueError(
                f"EndpointConfig.speech_min_level_dbfs must be < 0 dBFS, got {self.speech_min_level_dbfs}"
            )


def endpoint_rule(
    config: EndpointConfig, *, utterance_length_s: float, trailing_silence_s: float, has_text: bool
) -> int | None:
    """Which rule (1, 2, 3) says the utterance ended, or None. Pure function of the measurements."""
    if not config.enabled:
        return None
    if not has_text and trailing_silence_s >= config.rule1_min_trailing_silence_s:
        return 1
    if has_text and trailing_silence_s >= config.rule2_min_trailing_silence_s:
        return 2
    if utterance_length_s >= config.rule3_min_utterance_length_s:
        return 3
    return None


class SpeechDetector:
    """Energy speech detector: frame RMS (dBFS) against an adaptive noise floor.

    The noise floor is the minimum frame level over the last ``floor_window_s`` seconds ("minimum
    statistics"): speech always has short pauses, so the minimum follows the background, and it adapts
    within a few seconds when the background changes. A frame is speech when it is ``margin_db`` above
    that floor and above ``min_level_dbfs`` (so digital silence plus faint hiss is not speech). A short
    hangover bridges the gaps between syllables.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        frame_ms: float = 10.0,
        margin_db: float = 12.0,
        min_level_dbfs: float = -55.0,
        floor_window_s: float = 5.0,
        hangover_ms: float = 200.0,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be > 0, got {frame_ms}")
        self.sample_rate = int(sample_rate)
        self.frame_samples = max(1, round(sample_rate * frame_ms / 1000))
        self.frame_s = self.frame_samples / self.sample_rate
        self.margin_db = margin_db
        self.min_level_dbfs = min_level_dbfs
        self._floor_window_frames = max(1, round(floor_window_s / self.frame_s))
        self._hangover_frames = round(hangover_ms / 1000 / self.frame_s)
        self._pending = np.zeros(0, dtype=np.float32)
        # The last floor_window_frames - 1 frame levels: with a block's own levels they give each new
        # frame's sliding minimum in one vectorized step (no per-frame Python loop).
        self._history = np.zeros(0, dtype=np.float64)
        self._floor_dbfs = -100.0
        self._frames_done = 0
        self._last_speech_frame = -1  # index of the last frame called speech (before hangover)
        self.speech_frames = 0

    @property
    def now_s(self) -> float:
        """Seconds of audio analysed so far (whole frames only)."""
        return self._frames_done * self.frame_s

    @property
    def noise_floor_dbfs(self) -> float:
        return self._floor_dbfs

    @property
    def last_speech_end_s(self) -> float | None:
        """End time of the last speech frame including the hangover, or None if no speech yet."""
        if self._last_speech_frame < 0:
            return None
        end_frame = min(self._frames_done, self._last_speech_frame + 1 + self._hangover_frames)
        return end_frame * self.frame_s

    def trailing_silence_s(self, since_s: float = 0.0) -> float:
        """Seconds of non-speech at the end of the audio, counted from ``since_s`` at the earliest."""
        last = self.last_speech_end_s
        start = since_s if last is None else max(since_s, last)
        return max(0.0, self.now_s - start)

    def accept_waveform(self, samples: np.ndarray) -> None:
        """Analyses mono float32 samples (any block size; a partial frame waits for the next call)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n_frames = samples.size // self.frame_samples
        used = n_frames * self.frame_samples
        self._pending = samples[used:].copy()
        if n_frames == 0:
            return
        frames = samples[:used].reshape(n_frames, self.frame_samples).astype(np.float64)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        levels = 20.0 * np.log10(np.maximum(rms, 1e-5))  # -100 dBFS for digital silence
        window = self._floor_window_frames
        missing = window - 1 - self._history.size  # +inf stands for frames before the first one
        padded = np.concatenate([np.full(missing, np.inf), self._history, levels])
        floors = np.lib.stride_tricks.sliding_window_view(padded, window).min(axis=1)
        speech = (levels >= self.min_level_dbfs) & (levels >= floors + self.margin_db)
        hits = np.flatnonzero(speech)
        if hits.size:
            self._last_speech_frame = self._frames_done + int(hits[-1])
            self.speech_frames += int(hits.size)
        self._frames_done += n_frames
        self._floor_dbfs = float(floors[-1])
        keep = window - 1  # the levels the next block's first window reaches back to
        self._history = padded[missing:][-keep:] if keep else levels[:0]  # the real levels, no +inf


class EndpointDetector:
    """Applies :class:`EndpointConfig` using decoder times and a :class:`SpeechDetector`."""

    def __init__(self, config: EndpointConfig | None = None, *, sample_rate: int = 16000) -> None:
        self.config = config or EndpointConfig()
        self.speech = SpeechDetector(
            sample_rate,
            margin_db=self.config.speech_margin_db,
            min_level_dbfs=self.config.speech_min_level_dbfs,
        )
        self.last_rule: int | None = None

    def accept_waveform(self, samples: np.ndarray) -> None:
        if self.config.enabled and self.config.silence_from != "decoder":
            self.speech.accept_waveform(samples)

    def trailing_silence_s(
        self, *, utterance_start_s: float, last_token_s: float | None, decoded_s: float
    ) -> float:
        """Trailing silence of the current utterance as configured by ``silence_from``."""
        decoder_from = utterance_start_s if last_token_s is None else max(utterance_start_s, last_token_s)
        decoder_silence_s = max(0.0, decoded_s - decoder_from)
        source = self.config.silence_from
        if source == "decoder":
            return decoder_silence_s
        # Never count audio the decoder has not reached yet: the segment is cut at decoded_s.
        audio_silence_s = self.speech.trailing_silence_s(utterance_start_s)
        audio_silence_s = max(0.0, audio_silence_s - max(0.0, self.speech.now_s - decoded_s))
        if source == "audio":
            return audio_silence_s
        if source == "either":
            return max(decoder_silence_s, audio_silence_s)
        return min(decoder_silence_s, audio_silence_s)

    def is_endpoint(
        self,
        *,
        utterance_start_s: float,
        last_token_s: float | None,
        decoded_s: float,
        has_text: bool,
    ) -> bool:
        """True when a rule fires; ``last_rule`` then says which one."""
        if not self.config.enabled:
            self.last_rule = None
            return False
        silence_s = self.trailing_silence_s(
            utterance_start_s=utterance_start_s, last_token_s=last_token_s, decoded_s=decoded_s
        )
        self.last_rule = endpoint_rule(
            self.config,
            utterance_length_s=max(0.0, decoded_s - utterance_start_s),
            trailing_silence_s=silence_s,
            has_text=has_text,
        )
        return self.last_rule is not None
