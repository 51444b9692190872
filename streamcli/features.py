"""Online features, picked by a model's ``feature_type`` metadata (:func:`feature_extractor`).

``kaldi_fbank``: 80-dim kaldi log-mel filterbank with the settings sherpa-onnx and icefall use
(kaldi-native-fbank, for token parity with sherpa-onnx). ``whisper_log10_mel``: Whisper's 80-bin
log10 mel power, computed here vectorized (:class:`OnlineWhisperLogMel`).

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
# 30 s of 10 ms frames: the longest window or chunk one encoder call takes, and Whisper's segment.
FRAMES_30_S = 3000
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
        self._read(start, count, out)
        return out

    def _read(self, start: int, count: int, out: np.ndarray) -> None:
        """Copies frames [start, start+count) (checked to be held) into ``out``."""
        get = self._fbank.get_frame
        for i in range(count):
            out[i] = get(start + i)

    def discard_before(self, frame: int) -> None:
        """Frees all frames with index < ``frame``."""
        frame = min(frame, self.num_frames_ready)
        n = frame - self._first_kept
        if n > 0:
            self._fbank.pop(n)
            self._first_kept = frame


WHISPER_WINDOW = 400  # samples (25 ms); the FFT has the same length
WHISPER_SHIFT = 160  # samples (10 ms)
WHISPER_MELS = 80


def whisper_mel_matrix() -> np.ndarray:
    """(80, 201) Slaney-scale mel filters with Slaney area normalisation, Whisper's filterbank."""
    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log_part, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))

    fft_hz = np.linspace(0.0, SAMPLE_RATE_HZ / 2, WHISPER_WINDOW // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(SAMPLE_RATE_HZ / 2.0)),
                                  WHISPER_MELS + 2))
    rising = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class _WhisperMelFrames:
    """Online Whisper mel power frames, vectorized (numpy FFT over every new frame at once).

    Framing as kaldi-native-fbank's ``OnlineWhisperFbank`` (which computes one frame at a time with a
    recursive FFT, ~20x slower): periodic Hann window of 400 samples, frame m starts at sample
    160 m - 120 (kaldi's snip_edges=False centring), samples before the start and, once the input is
    finished, after the end are reflected; a frame is emitted once its last sample has arrived, and
    the tail frames (round(n / 160) in all) at input_finished(). ``tests/test_features.py`` holds it
    against that extractor for arbitrary block cuts.
    """

    _WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WHISPER_WINDOW) / WHISPER_WINDOW))
    _MEL_T = whisper_mel_matrix().T  # (201, 80)

    def __init__(self) -> None:
        self._samples = np.zeros(0, dtype=np.float32)  # held samples, the first is absolute _sample0
        self._sample0 = 0
        self._received = 0
        self._frames = np.zeros((0, WHISPER_MELS), dtype=np.float32)  # held frames from _frame0
        self._frame0 = 0
        self._finished = False

    @property
    def num_frames_ready(self) -> int:
        return self._frame0 + self._frames.shape[0]

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        self._samples = np.concatenate([self._samples, samples.astype(np.float32, copy=False)])
        self._received += samples.size
        # Frames whose window ends inside the received audio (start 160 m - 120, length 400).
        if self._received >= 280:
            self._compute_until((self._received - 280) // WHISPER_SHIFT + 1)

    def input_finished(self) -> None:
        self._finished = True
        self._compute_until((self._received + WHISPER_SHIFT // 2) // WHISPER_SHIFT)

    def _compute_until(self, end_frame: int) -> None:
        end_frame = min(end_frame, (self._received + WHISPER_SHIFT // 2) // WHISPER_SHIFT)
        first = self.num_frames_ready
        if end_frame <= first or self._received == 0:
            return
        starts = WHISPER_SHIFT * np.arange(first, end_frame) - 120
        index = starts[:, None] + np.arange(WHISPER_WINDOW)[None, :]
        n = self._received
        while (index < 0).any() or (index >= n).any():  # reflect (repeatedly, for tiny inputs)
            index = np.where(index < 0, -index - 1, index)
            index = np.where(index >= n, 2 * n - 1 - index, index)
        spectrum = np.fft.rfft(self._samples[index - self._sample0] * self._WINDOW, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        # einsum, not @: numpy's BLAS would start its own thread pool, whose spinning threads starve
        # onnxruntime's on a small machine (measured: the encoder 2.5x slower on 2 cores).
        mel = np.einsum("fk,km->fm", power, self._MEL_T)
        self._frames = np.concatenate([self._frames, mel.astype(np.float32)])
        # The next frame starts at 160 * end_frame - 120: older samples are never needed again.
        keep_from = max(0, WHISPER_SHIFT * end_frame - 120)
        if keep_from > self._sample0:
            self._samples = self._samples[keep_from - self._sample0 :]
            self._sample0 = keep_from

    def get_frames(self, start: int, count: int) -> np.ndarray:
        return self._frames[start - self._frame0 : start - self._frame0 + count]

    def pop(self, count: int) -> None:
        self._frames = self._frames[count:]
        self._frame0 += count


class OnlineWhisperLogMel(OnlineFbank):
    """Whisper's 80-bin mel power (400-sample Hann window, 10 ms hop) as log10, computed online.

    Only log10(max(power, 1e-10)) here. Whisper's own normalisation (clamp to the utterance maximum
    minus 8) needs the whole utterance, so the streaming models clamp to a fixed floor inside their
    ONNX graph instead, and the second pass applies Whisper's rule per finished segment.
    """

    def _make_extractor(self) -> _WhisperMelFrames:  # type: ignore[override]
        if self.feature_dim != WHISPER_MELS:
            raise ValueError(f"Whisper log-mel has 80 bins, not {self.feature_dim}")
        return _WhisperMelFrames()

    def _read(self, start: int, count: int, out: np.ndarray) -> None:
        np.log10(np.maximum(self._fbank.get_frames(start, count), 1e-10), out=out)


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
    Whisper: counted as if frame k covered samples [160k, 160k + 400), i.e. ceil((n - 400) / 160) + 1
    frames. The extractor's frames start 120 samples earlier (centred, see _WhisperMelFrames), so the
    count is off by at most one frame at the tail; it is kept as it is because the shipped models were
    trained and measured with it (tail padding and flush sizes follow from it)."""
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

