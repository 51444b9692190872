"""Audio input: formats, rates, channels, sample types, stdin WAV, block-wise reading, validation."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
import soundfile as sf
from paths import SHARED, TEST_WAVS

from streamcli.audio import (
    ResampleStream,
    downmix,
    open_audio,
    read_audio,
    resample,
)
from streamcli.errors import AudioError


def tone(seconds: float, rate: int, freq_hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq_hz * t)).astype(np.float32)


def dominant_freq_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [
        ("WAV", "PCM_16", "wav"),
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("FLAC", "PCM_24", "flac"),
        ("OGG", "VORBIS", "ogg"),
        ("MP3", "MPEG_LAYER_III", "mp3"),
    ],
)
def test_formats_and_sample_types_decode_to_the_same_tone(tmp_path, fmt, subtype, ext):
    rate = 16000
    x = tone(1.0, rate)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    y, out_rate = read_audio(path, target_rate=16000)
    assert out_rate == 16000
    assert y.dtype == np.float32 and y.ndim == 1
    lossy = fmt in ("OGG", "MP3")
    # mp3 encoders add a delay; length stays within a frame of the original.
    assert abs(y.size - x.size) <= (1200 if lossy else 0)
    assert dominant_freq_hz(y[:16000], rate) == pytest.approx(440.0, abs=2.0)
    if not lossy:
        tol = {"PCM_16": 1 / 32768, "PCM_24": 1 / 2**23, "PCM_32": 1e-6, "FLOAT": 1e-7}[subtype]
        assert np.max(np.abs(y - x)) <= tol * 1.01


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_any_rate_is_resampled_keeping_duration_and_pitch(tmp_path, in_rate):
    x = tone(2.0, in_rate, freq_hz=1000.0)
    path = tmp_path / "r.wav"
    sf.write(path, x, in_rate, subtype="PCM_16")
    y, rate = read_audio(path, target_rate=16000)
    assert rate == 16000
    assert abs(y.size - 32000) <= 2
    assert dominant_freq_hz(y, 16000) == pytest.approx(1000.0, abs=2.0)
    # a real resampler keeps the level (no aliasing or gain loss in the pass band)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_streaming_resampler_matches_whole_array_resampling():
    x = tone(1.5, 44100, freq_hz=300.0) + tone(1.5, 44100, freq_hz=3000.0, amplitude=0.2)
    whole = resample(x, 44100, 16000)
    stream = ResampleStream(44100, 16000)
    pieces = [stream.process(x[i : i + 1234]) for i in range(0, x.size, 1234)]
    pieces.append(stream.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(pieces)
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_multichannel_is_downmixed_to_the_mean(tmp_path):
    rate = 16000
    left, right = tone(0.5, rate, 500.0), tone(0.5, rate, 500.0, amplitude=0.1)
    third = np.zeros_like(left)
    path = tmp_path / "three.wav"
    sf.write(path, np.stack([left, right, third], axis=1), rate, subtype="FLOAT")
    y, _ = read_audio(path)
    np.testing.assert_allclose(y, (left + right + third) / 3, atol=1e-6)
    assert downmix(np.ones((4, 2), np.float32)).shape == (4,)


def test_real_dev_audio_stereo_24bit_44k(tmp_path):
    # The one 44.1 kHz stereo 24-bit file of the dev set.
    import csv

    with open(SHARED / "data/dev/dev.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    dev = SHARED / "data/dev"
    stereo = [r for r in rows if sf.info(dev / r["path"]).channels == 2]
    assert stereo, "dev set has a stereo file"
    path = dev / stereo[0]["path"]
    info = sf.info(path)
    with open_audio(path, target_rate=16000, block_s=0.25) as audio:
        assert audio.info.channels == 2 and audio.info.sample_rate == 44100
        sizes = [b.size for b in audio.blocks()]
    # block-wise: no block is much larger than 0.25 s at 16 kHz
    assert max(sizes) <= 0.3 * 16000
    assert abs(sum(sizes) / 16000 - info.frames / info.samplerate) < 0.01


def test_8k_wav_from_shared_models():
    y, rate = read_audio(TEST_WAVS / "8k.wav", target_rate=16000)
    assert rate == 16000
    assert abs(y.size / 16000 - sf.info(TEST_WAVS / "8k.wav").duration) < 0.01


def test_blocks_are_bounded_so_long_files_stay_flat(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 30, np.float32), 16000, subtype="PCM_16")
    with open_audio(path, block_s=0.1) as audio:
        sizes = [b.size for b in audio.blocks()]
    assert max(sizes) == 1600 and sum(sizes) == 16000 * 30 and len(sizes) == 300


# ---------------------------------------------------------------------------------------------------
# stdin WAV


def wav_bytes(x: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


class Pipe(io.RawIOBase):
    """A non-seekable stream that returns short reads, like a pipe."""

    def __init__(self, data: bytes, piece: int = 777) -> None:
        self._data, self._pos, self._piece = data, 0, piece

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._piece if size < 0 else min(size, self._piece)
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_stdin_wav_matches_libsndfile(subtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8000, 2)) * 0.2).clip(-1, 1).astype(np.float32)
    data = wav_bytes(x, 22050, subtype)
    expected, _ = sf.read(io.BytesIO(data), dtype="float32")
    with open_audio("-", stdin=Pipe(data)) as audio:
        assert audio.info.sample_rate == 22050 and audio.info.channels == 2
        assert audio.info.frames == 8000
        raw = np.concatenate(list(audio.raw_blocks()))
    np.testing.assert_allclose(raw, expected, atol=1e-6)


def test_stdin_wave_format_extensible():
    x = (np.random.default_rng(2).standard_normal((4000, 3)) * 0.2).clip(-1, 1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 48000, format="WAVEX", subtype="PCM_24")
    data = buf.getvalue()
    assert struct.unpack("<H", data[20:22])[0] == 0xFFFE  # really the extensible header
    raw, _ = read_audio("-", stdin=Pipe(data))
    np.testing.assert_allclose(raw, x.mean(axis=1), atol=1e-5)


def test_stdin_wav_of_unknown_length_is_read_to_the_end():
    x = tone(0.7, 16000)
    data = bytearray(wav_bytes(x, 16000))
    data_at = data.index(b"data")
    data[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFFFF)  # what streaming writers put there
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    y, _ = read_audio("-", stdin=Pipe(bytes(data)))
    assert y.size == x.size


def test_stdin_errors():
    with pytest.raises(AudioError, match="empty input"):
        open_audio("-", stdin=io.BytesIO(b""))
    with pytest.raises(AudioError, match="not WAV data.*only WAV"):
        open_audio("-", stdin=io.BytesIO(b"fLaC" + b"\0" * 100))
    data = wav_bytes(tone(1.0, 16000), 16000)
    with pytest.raises(AudioError, match="truncated"), open_audio("-", stdin=io.BytesIO(data[:20000])) as a:
        list(a.blocks())
    with pytest.raises(AudioError, match="truncated"):
        open_audio("-", stdin=io.BytesIO(data[:30]))


# ---------------------------------------------------------------------------------------------------
# Validation


def test_missing_directory_empty_and_non_audio(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        open_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        open_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        open_audio(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        open_audio(tmp_path / "notes.wav")


@pytest.mark.parametrize(("ext", "fmt"), [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_truncated_files_are_reported(tmp_path, ext, fmt):
    rng = np.random.default_rng(1)
    path = tmp_path / f"full.{ext}"
    sf.write(path, (rng.standard_normal(48000) * 0.1).astype(np.float32), 16000, format=fmt)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated") as err, open_audio(cut) as audio:
        list(audio.blocks())
    assert str(err.value).startswith(str(cut))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples_are_rejected_with_their_time(tmp_path, bad):
    x = tone(1.0, 16000)
    x[12000] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"NaN or Inf\) at 0\.750 s"):
        read_audio(path)


def test_zero_length_audio_is_valid_and_empty(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 44100, subtype="PCM_16")
    y, rate = read_audio(path, target_rate=16000)
    assert y.size == 0 and rate == 16000
    data = wav_bytes(np.zeros(0, np.float32), 16000)
    y, _ = read_audio(io.BytesIO(data))
    assert y.size == 0
