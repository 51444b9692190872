"""Online 80-dim kaldi log-mel filterbank with the settings sherpa-onnx and icefall use.

The settings matter for parity with models trained by icefall: 16 kHz, 25 ms windows every 10 ms,
povey window, no dither, ``snip_edges=False`` (frame count depends only on the shift), mel bins from
20 Hz up to Nyquist - 400 Hz, samples in [-1, 1] (sherpa-onnx ``normalize_samples=True``).
"""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np

SAMPLE_RATE_HZ = 16000
FRAME_SHIFT_MS = 10
FRAME_LENGTH_MS = 25
LOW_FREQ_HZ = 20.0
# Negative: an offset below Nyquist (8000 - 400 = 7600 Hz at 16 kHz), as sherpa-onnx sets it.
HIGH_FREQ_HZ = -400.0


def fbank_options(feature_dim: int = 80, sample_rate: int = SAMPLE_RATE_HZ) -> knf.FbankOptions:
    """Returns kaldi_native_fbank options identical to sherpa-onnx's FeatureExtractor defaults."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(sample_rate)
    opts.frame_opts.frame_shift_ms = float(FRAME_SHIFT_MS)
    opts.frame_opts.frame_length_ms = float(FRAME_LENGTH_MS)
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.num_bins = int(feature_dim)
    opts.mel_opts.low_freq = LOW_FREQ_HZ
    opts.mel_opts.high_freq = HIGH_FREQ_HZ
    opts.mel_opts.is_librosa = False
    return opts


class OnlineFbank:
    """Streaming fbank: push samples, read frames by absolute index, drop frames already consumed.

    Frame indices are absolute since the start of the stream; ``discard_before`` pops frames from
    the underlying extractor so memory stays flat however long the stream runs.
    """

    def __init__(self, feature_dim: int = 80, sample_rate: int = SAMPLE_RATE_HZ) -> None:
        self.feature_dim = int(feature_dim)
        self.sample_rate = int(sample_rate)
        self._fbank = self._make_extractor()
        self._first_kept = 0  # absolute index of the oldest frame still held
        self._finished = False

    def _make_extractor(self):  # noqa: ANN202 (a kaldi_native_fbank online extractor)
        return knf.OnlineFbank(fbank_options(self.feature_dim, self.sample_rate))

    @property
    def num_frames_ready(self) -> int:
        """Absolute number of frames computed so far (including popped ones)."""
        return int(self._fbank.num_frames_ready)

    @property
    def first_kept_frame(self) -> int:
        return self._first_kept

    @property
    def finished(self) -> bool:
        return self._finished

    def accept_waveform(self, samples: np.ndarray) -> None:
        """Appends mono float samples in [-1, 1] at ``self.sample_rate``."""
        if self._finished:
            raise ValueError("accept_waveform() after input_finished()")
        if samples.size:
            self._fbank.accept_waveform(self.sample_rate, np.ascontiguousarray(samples, dtype=np.float32))

    def input_finished(self) -> None:
        """Flushes the last frames (with snip_edges=False the tail frames need the end of input)."""
        if not self._finished:
            self._fbank.input_finished()
            self._finished = True

    def get_frames(self, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames [start, start+count) as a (count, feature_dim) float32 array."""
        if start < self._first_kept or start + count > self.num_frames_ready:
            raise IndexError(
                f"frames [{start}, {start + count}) not held "
                f"(have [{self._first_kept}, {self.num_frames_ready}))"
            )
        if out is None:
            out = np.empty((count, self.feature_dim), dtype=np.float32)
        get = self._fbank.get_frame
        for i in range(count):
            out[i] = get(start + i)
        return self._transform(out)

    def _transform(self, frames: np.ndarray) -> np.ndarray:
        return frames

    def discard_before(self, frame: int) -> None:
        """Frees all frames with index < ``frame``."""
        frame = min(frame, self.num_frames_ready)
        n = frame - self._first_kept
        if n > 0:
            self._fbank.pop(n)
            self._first_kept = frame


class OnlineWhisperLogMel(OnlineFbank):
    """Whisper's 80-bin mel power (400-sample Hann window, 10 ms hop) as log10, computed online.

    Only log10(max(power, 1e-10)) here. Whisper's own normalisation (clamp to the utterance maximum
    minus 8) needs the whole utterance, so the streaming models clamp to a fixed floor inside their
    ONNX graph instead, and the second pass applies Whisper's rule per finished segment.
    """

    def _make_extractor(self):  # noqa: ANN202
        if self.feature_dim != 80:
            raise ValueError(f"Whisper log-mel has 80 bins, not {self.feature_dim}")
        opts = knf.WhisperFeatureOptions()
        opts.frame_opts.dither = 0.0
        return knf.OnlineWhisperFbank(opts)

    def _transform(self, frames: np.ndarray) -> np.ndarray:
        np.log10(np.maximum(frames, 1e-10, out=frames), out=frames)
        return frames


FEATURE_TYPES: dict[str, type[OnlineFbank]] = {
    "kaldi_fbank": OnlineFbank,
    "whisper_log10_mel": OnlineWhisperLogMel,
}


def feature_extractor(
    feature_type: str, feature_dim: int = 80, sample_rate: int = SAMPLE_RATE_HZ
) -> OnlineFbank:
    """The one place that maps a model's ``feature_type`` metadata to its online extractor."""
    try:
        cls = FEATURE_TYPES[feature_type]
    except KeyError:
        known = ", ".join(FEATURE_TYPES)
        raise ValueError(f"unknown feature_type {feature_type!r} (known: {known})") from None
    return cls(feature_dim, sample_rate)


def frames_covering(feature_type: str, num_samples: int) -> int:
    """How many frames it takes for every one of ``num_samples`` samples to be inside some frame.

    kaldi fbank (snip_edges=False): frames are centred on multiples of 10 ms, round(n / 160).
    Whisper (snip_edges=True): frame k covers samples [160k, 160k + 400), so the last sample needs
    ceil((n - 400) / 160) + 1 frames."""
    shift = SAMPLE_RATE_HZ * FRAME_SHIFT_MS // 1000
    if num_samples <= 0:
        return 0
    if feature_type == "whisper_log10_mel":
        window = SAMPLE_RATE_HZ * FRAME_LENGTH_MS // 1000
        return 1 + max(0, -(-(num_samples - window) // shift))
    return (num_samples + shift // 2) // shift


def samples_for_frames(feature_type: str, num_frames: int) -> int:
    """Samples the extractor needs before it outputs ``num_frames`` frames (after input_finished())."""
    shift = SAMPLE_RATE_HZ * FRAME_SHIFT_MS // 1000
    if num_frames <= 0:
        return 0
    if feature_type == "whisper_log10_mel":
        return SAMPLE_RATE_HZ * FRAME_LENGTH_MS // 1000 + (num_frames - 1) * shift
    return num_frames * shift - shift // 2


def compute_features(samples: np.ndarray, feature_type: str, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Whole-signal features of either type: (num_frames, 80) float32."""
    fb = feature_extractor(feature_type, 80, sample_rate)
    fb.accept_waveform(samples)
    fb.input_finished()
    return fb.get_frames(0, fb.num_frames_ready)


def compute_fbank(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ, feature_dim: int = 80
) -> np.ndarray:
    """Whole-signal fbank (for tests and tools): (num_frames, feature_dim) float32."""
    fb = OnlineFbank(feature_dim, sample_rate)
    fb.accept_waveform(samples)
    fb.input_finished()
    return fb.get_frames(0, fb.num_frames_ready)
