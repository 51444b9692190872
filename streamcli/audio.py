"""Audio input: block-wise reading, downmix, streaming resampling and validation.

Files go through libsndfile (``soundfile``): wav, flac, ogg/vorbis, mp3 and the rest of its formats,
any sample rate, any channel count, 8/16/24/32-bit integer and float samples. ``-`` reads a WAV stream
from stdin with a small parser of our own, because libsndfile needs a seekable file for most formats
and pipes (``sox ... -t wav -``, ``ffmpeg ... -f wav -``) often write an unknown data length.

Everything is read block by block (default 0.1 s), so memory stays flat however long the input is::

    with open_audio("talk.flac", target_rate=16000) as audio:
        print(audio.info.duration_s)
        for block in audio.blocks():          # float32 mono in [-1, 1] at 16 kHz
            ...

Problems raise :class:`streamcli.errors.AudioError` with one line naming the input: missing path,
directory, empty or non-audio file, truncated file, NaN/Inf samples. Zero-length audio is valid and
yields no blocks.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from streamcli.errors import AudioError

STDIN_NAME = "-"
DEFAULT_BLOCK_S = 0.1  # live sources: one block is one wait
FILE_BLOCK_S = 1.0  # regular files (transcribe): read ahead in fewer, larger blocks

# WAV data-chunk sizes that streaming writers use for "unknown length" (not a truncation).
_UNKNOWN_WAV_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000}
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class AudioInfo:
    """What the input holds before any conversion."""

    name: str  # the path as given, or "-" for stdin
    sample_rate: int
    channels: int
    frames: int | None  # None when unknown in advance (a WAV stream of unknown length on stdin)
    format: str  # e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "PCM_24", "FLOAT"

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


def downmix(block: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,) float32, the mean of the channels."""
    if block.ndim == 1:
        return block.astype(np.float32, copy=False)
    if block.shape[1] == 1:
        return block[:, 0].astype(np.float32, copy=False)
    return block.mean(axis=1, dtype=np.float32)


class ResampleStream:
    """Streaming resampler (soxr, high quality): feed blocks, get blocks, flush with ``last=True``.

    With equal rates it passes blocks through untouched. Output is float32 mono.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be > 0, got {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._soxr = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)
        )

    @property
    def passthrough(self) -> bool:
        return self._soxr is None

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if self._soxr is None:
            return samples
        return self._soxr.resample_chunk(samples, last=last)


class AudioConverter:
    """The one door for audio into a model: blocks at any rate, mono or (frames, channels), become
    float32 mono at the model's rate: downmixed, checked for NaN/Inf (an AudioError naming the time of
    the first bad sample) and resampled by one streaming resampler. Files, the microphone, arrays and
    served streams all pass through one of these."""

    def __init__(self, in_rate: int, out_rate: int, name: str = "samples", *, check: bool = True) -> None:
        self.name = name
        self.in_rate = int(in_rate)
        self.check = check  # False where the reader checked already (AudioSource.raw_blocks)
        self.frames_in = 0
        self._resampler = ResampleStream(self.in_rate, int(out_rate))

    @property
    def passthrough(self) -> bool:
        return self._resampler.passthrough

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if self.check and block.size:
            check_finite(block, self.name, self.frames_in, self.in_rate)
        self.frames_in += block.shape[0] if block.ndim else 0
        return self._resampler.process(downmix(block), last=last)

    def flush(self) -> np.ndarray:
        """The resampler's tail (empty when nothing is resampled)."""
        if self.passthrough:
            return np.zeros(0, np.float32)
        return self._resampler.process(np.zeros(0, np.float32), last=True)


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-array resampling with the same filter as :class:`ResampleStream`."""
    return ResampleStream(in_rate, out_rate).process(samples, last=True)


def check_finite(block: np.ndarray, name: str, start_frame: int, sample_rate: int) -> None:
    """AudioError if the block holds NaN or Inf (float files can; they would poison the features)."""
    finite = np.isfinite(block)
    if not finite.all():
        rows = finite.reshape(block.shape[0], -1).all(axis=1)
        bad_frame = start_frame + int(np.flatnonzero(~rows)[0])
        raise AudioError(f"{name}: invalid sample (NaN or Inf) at {bad_frame / sample_rate:.3f} s")


class AudioSource:
    """An opened input; use :func:`open_audio`. Iterate :meth:`blocks` once."""

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        target_rate: int | None = None,
        block_s: float = DEFAULT_BLOCK_S,
        stdin: BinaryIO | None = None,
    ) -> None:
        if block_s <= 0:
            raise ValueError(f"block_s must be > 0, got {block_s}")
        self.block_s = block_s
        self._file: sf.SoundFile | None = None
        self._wav: _WavStream | None = None
        self._stream_handle: BinaryIO | None = None
        if isinstance(source, (str, os.PathLike)) and os.fspath(source) == STDIN_NAME:
            self._wav = _WavStream(stdin if stdin is not None else _stdin_binary(), STDIN_NAME)
            self.info = self._wav.info
        elif isinstance(source, (str, os.PathLike)) and _is_stream_path(Path(source)):
            # A FIFO, <(process substitution) or a device: no seeking, so only WAV, read as a stream.
            try:
                self._stream_handle = open(source, "rb")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise AudioError(f"{source}: cannot open ({exc.strerror})") from None
            try:
                self._wav = _WavStream(self._stream_handle, str(source))
            except BaseException:
                self._stream_handle.close()
                raise
            self.info = self._wav.info
        elif isinstance(source, (str, os.PathLike)):
            self._file, self.info = _open_file(Path(source), str(source))
        else:
            self._wav = _WavStream(source, getattr(source, "name", None) or "<stream>")
            self.info = self._wav.info
        self.target_rate = int(target_rate) if target_rate else self.info.sample_rate
        self.frames_read = 0

    @property
    def name(self) -> str:
        return self.info.name

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._stream_handle is not None:
            self._stream_handle.close()
            self._stream_handle = None

    def raw_blocks(self) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks at the input rate, validated."""
        block_frames = max(1, round(self.block_s * self.info.sample_rate))
        name = self.info.name
        if self._wav is not None:
            for block in self._wav.blocks(block_frames):
                check_finite(block, name, self.frames_read, self.info.sample_rate)
                self.frames_read += block.shape[0]
                yield block
            return
        assert self._file is not None
        try:
            for block in self._file.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                check_finite(block, name, self.frames_read, self.info.sample_rate)
                self.frames_read += block.shape[0]
                yield block
        except sf.LibsndfileError as exc:
            raise AudioError(
                f"{name}: truncated or corrupt audio after {self.frames_read / self.info.sample_rate:.2f} s "
                f"({exc.error_string})"
            ) from exc
        declared = self.info.frames
        # FLAC and friends announce their length; decoding fewer frames means the file was cut.
        if self.info.format == "FLAC" and declared and self.frames_read < declared:
            rate = self.info.sample_rate
            raise AudioError(
                f"{name}: truncated file: {self.frames_read} of {declared} frames "
                f"({self.frames_read / rate:.2f} of {declared / rate:.2f} s)"
            )

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 mono blocks at ``target_rate``; the resampler's tail comes out at the end."""
        converter = AudioConverter(self.info.sample_rate, self.target_rate, self.info.name, check=False)
        for block in self.raw_blocks():  # checked as read, with the time in this file
            out = converter.process(block)
            if out.size:
                yield out
        tail = converter.flush()
        if tail.size:
            yield tail


def open_audio(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    target_rate: int | None = None,
    block_s: float = DEFAULT_BLOCK_S,
    stdin: BinaryIO | None = None,
) -> AudioSource:
    """Opens and validates a file path, ``-`` (WAV on stdin, or ``stdin`` if given) or a binary stream."""
    return AudioSource(source, target_rate=target_rate, block_s=block_s, stdin=stdin)


def read_audio(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    target_rate: int | None = None,
    stdin: BinaryIO | None = None,
) -> tuple[np.ndarray, int]:
    """The whole input as one float32 mono array and its rate (for short files and tests)."""
    with open_audio(source, target_rate=target_rate, stdin=stdin) as audio:
        blocks = list(audio.blocks())
        rate = audio.target_rate
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return samples, rate


# ---------------------------------------------------------------------------------------------------
# Files through libsndfile


def _open_file(path: Path, name: str) -> tuple[sf.SoundFile, AudioInfo]:
    if not path.exists():
        raise AudioError(f"{name}: no such file")
    if path.is_dir():
        raise AudioError(f"{name}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{name}: permission denied")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file")
    mp3_cut = _mp3_truncation(path)
    if mp3_cut:
        raise AudioError(f"{name}: truncated file ({mp3_cut})")
    try:
        # The file system's bytes: soundfile encodes a str name as strict UTF-8, which a name that is
        # not UTF-8 (kept by Python as surrogates) cannot be.
        handle = sf.SoundFile(os.fsencode(path))
    except sf.LibsndfileError as exc:
        raise AudioError(
            f"{name}: not a readable audio file ({exc.error_string}); "
            "formats: wav, flac, ogg, mp3 and the rest of libsndfile's"
        ) from exc
    except (RuntimeError, TypeError) as exc:
        raise AudioError(f"{name}: cannot read audio ({exc})") from exc
    info = AudioInfo(
        name=name,
        sample_rate=int(handle.samplerate),
        channels=int(handle.channels),
        frames=int(handle.frames),
        format=str(handle.format),
        subtype=str(handle.subtype),
    )
    if info.sample_rate <= 0 or info.channels <= 0:
        handle.close()
        raise AudioError(f"{name}: invalid header ({info.sample_rate} Hz, {info.channels} channels)")
    truncation = _truncation_in_log(handle)
    if truncation:
        handle.close()
        raise AudioError(f"{name}: truncated file ({truncation})")
    return handle, info


def _mp3_truncation(path: Path) -> str | None:
    """A cut MP3 decodes to its full announced length (zero-padded), so check its Xing/Info header:
    the byte count it announces against what the file holds. MP3s without that header cannot tell."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16384)
    except OSError:
        return None
    offset = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # skip an ID3v2 tag (syncsafe size)
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        offset = 10 + size + (10 if head[5] & 0x10 else 0)
        with open(path, "rb") as handle:
            handle.seek(offset)
            head = handle.read(16384)
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return None  # not an MPEG audio frame
    tag_at = max(head.find(b"Xing", 0, 200), head.find(b"Info", 0, 200))
    if tag_at < 0 or len(head) < tag_at + 16:
        return None
    flags = struct.unpack(">I", head[tag_at + 4 : tag_at + 8])[0]
    field_at = tag_at + 8 + (4 if flags & 1 else 0)
    if not flags & 2 or len(head) < field_at + 4:
        return None
    announced = struct.unpack(">I", head[field_at : field_at + 4])[0]
    present = path.stat().st_size - offset
    # The announced count may or may not include trailing tags; only a real shortfall is a cut.
    if announced > 0 and present < announced * 0.98:
        return f"MP3 header announces {announced} bytes of audio, {present} present"
    return None


_WAV_DATA_LOG = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _truncation_in_log(handle: sf.SoundFile) -> str | None:
    """libsndfile quietly shortens a cut WAV to what is there; its open log says so."""
    try:
        log = handle.extra_info
    except Exception:  # noqa: BLE001 - the log is a diagnostic nicety, never a reason to fail
        return None
    match = _WAV_DATA_LOG.search(log)
    if match:
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in _UNKNOWN_WAV_SIZES and present < declared:
            return f"header declares {declared} data bytes, {present} present"
    if "lacks an end-of-stream bit" in log:
        return "the last Ogg page has no end-of-stream mark"
    return None


# ---------------------------------------------------------------------------------------------------
def _is_stream_path(path: Path) -> bool:
    """An existing path that is neither a regular file nor a folder (pipe, character device, socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _stdin_binary() -> BinaryIO:
    """The process's standard input as bytes; AudioError when it is closed (``<&-``)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise AudioError(f"{STDIN_NAME}: standard input is closed")
    try:
        fd = stream.fileno()
    except io.UnsupportedOperation:
        return stream  # an in-memory stand-in (tests, embedding): readable as it is
    except ValueError:
        raise AudioError(f"{STDIN_NAME}: standard input is closed") from None
    try:
        os.fstat(fd)
    except OSError:
        raise AudioError(f"{STDIN_NAME}: standard input is closed") from None
    return stream


# WAV streams (stdin): RIFF/WAVE with PCM 8/16/24/32-bit or IEEE float 32/64, read sequentially


_MAX_FMT_BYTES = 1024


class _WavStream:
    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self._name = name
        self._remaining: int | None = None
        self._parse_header()

    def _read_exact(self, size: int, what: str) -> bytes:
        data = _read_up_to(self._stream, size)
        if len(data) < size:
            if not data and what == "RIFF header":
                raise AudioError(f"{self._name}: no data (empty input)")
            raise AudioError(f"{self._name}: truncated WAV ({what} cut short)")
        return data

    def _parse_header(self) -> None:
        name = self._name
        riff = self._read_exact(12, "RIFF header")
        if riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
            hint = (" (only WAV can be read from stdin)" if name == STDIN_NAME
                    else " (only WAV can be read from a pipe or device)" if not os.path.isfile(name) else "")
            raise AudioError(f"{name}: not WAV data{hint}")
        if riff[:4] == b"RIFX":
            raise AudioError(f"{name}: big-endian RIFX WAV is not supported on a stream")
        fmt: tuple[int, int, int, int] | None = None
        while True:
            chunk = self._read_exact(8, "chunk header")
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                # A real fmt chunk is 16-40 bytes; a huge claimed size must not be buffered.
                if size < 16 or size > _MAX_FMT_BYTES:
                    raise AudioError(f"{name}: invalid WAV fmt chunk ({size} bytes)")
                body = self._read_exact(size + (size & 1), "fmt chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (tag, channels, rate, bits)
            elif chunk_id == b"data":
                if fmt is None:
                    raise AudioError(f"{name}: invalid WAV (data before fmt chunk)")
                self._remaining = None if size in _UNKNOWN_WAV_SIZES else size
                break
            else:
                self._skip(size + (size & 1))
        tag, channels, rate, bits = fmt
        if channels <= 0 or rate <= 0:
            raise AudioError(f"{name}: invalid WAV header ({rate} Hz, {channels} channels)")
        if tag == _WAVE_FORMAT_PCM and bits in (8, 16, 24, 32):
            subtype = f"PCM_{bits}" if bits > 8 else "PCM_U8"
        elif tag == _WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
            subtype = "FLOAT" if bits == 32 else "DOUBLE"
        else:
            raise AudioError(f"{name}: unsupported WAV encoding (format tag {tag:#x}, {bits} bits)")
        self._bits = bits
        self._float = tag == _WAVE_FORMAT_IEEE_FLOAT
        self._frame_bytes = channels * bits // 8
        frames = None if self._remaining is None else self._remaining // self._frame_bytes
        self.info = AudioInfo(name, rate, channels, frames, "WAV", subtype)

    def _skip(self, size: int) -> None:
        while size > 0:
            data = _read_up_to(self._stream, min(size, 1 << 16))
            if not data:
                raise AudioError(f"{self._name}: truncated WAV (chunk cut short)")
            size -= len(data)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        block_bytes = block_frames * self._frame_bytes
        channels = self.info.channels
        carry = b""
        while True:
            want = block_bytes if self._remaining is None else min(block_bytes, self._remaining)
            if want <= 0:
                break
            data = carry + _read_up_to(self._stream, want - len(carry))
            if self._remaining is not None:
                self._remaining -= len(data) - len(carry)
            usable = len(data) - len(data) % self._frame_bytes
            if usable:
                yield self._decode(data[:usable]).reshape(-1, channels)
            carry = data[usable:]
            if len(data) < want:  # end of stream
                if self._remaining:
                    raise AudioError(
                        f"{self._name}: truncated WAV stream ({self._remaining} data bytes missing)"
                    )
                break

    def _decode(self, data: bytes) -> np.ndarray:
        bits = self._bits
        if self._float:
            return np.frombuffer(data, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
        if bits == 8:
            return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        if bits == 16:
            return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if bits == 32:
            return (np.frombuffer(data, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        # 24-bit: widen three little-endian bytes into the top of an int32.
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
        wide = np.zeros((raw.shape[0], 4), dtype=np.uint8)
        wide[:, 1:] = raw
        return (wide.view("<i4").reshape(-1).astype(np.float64) / 2147483648.0).astype(np.float32)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Reads until ``size`` bytes or end of stream (pipes return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        data = stream.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)
