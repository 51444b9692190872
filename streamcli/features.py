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
        self._fbank = knf.OnlineFbank(fbank_options(feature_dim, sample_rate))
        self._first_kept = 0  # absolute index of the oldest frame still held
        self._finished = False

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
        return out

    def discard_before(self, frame: int) -> None:
        """Frees all frames with index < ``frame``."""
        frame = min(frame, self.num_frames_ready)
        n = frame - self._first_kept
        if n > 0:
            self._fbank.pop(n)
            self._first_kept = frame


def compute_fbank(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ, feature_dim: int = 80
) -> np.ndarray:
    """Whole-signal fbank (for tests and tools): (num_frames, feature_dim) float32."""
    fb = OnlineFbank(feature_dim, sample_rate)
    fb.accept_waveform(samples)
    fb.input_finished()
    return fb.get_frames(0, fb.num_frames_ready)
