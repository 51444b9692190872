"""Audio inputs for ``live``: PortAudio devices (sounddevice) and a file played as a microphone.

Everything here is shaped like ``sounddevice.InputStream`` (a callback per block from a thread), so
:class:`streamcli.live.LiveTranscriber` cannot tell a microphone from :class:`FileInputStream`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamcli.audio import open_audio
from streamcli.errors import AudioError, DeviceError


class InputStreamLike(Protocol):
    """The part of ``sounddevice.InputStream`` the live pipeline uses."""

    samplerate: float
    channels: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class InputDevice:
    """One audio input as PortAudio reports it."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_rate_hz: float
    is_default: bool


def import_sounddevice() -> Any:
    """sounddevice, or a one-line DeviceError when PortAudio itself is missing."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise DeviceError(
            f"PortAudio library not found ({exc}); install it, e.g. `apt-get install libportaudio2`"
        ) from None
    return sounddevice


def list_input_devices() -> list[InputDevice]:
    """All devices with at least one input channel, as PortAudio sees them."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    if default_in is None or default_in < 0:
        with contextlib.suppress(Exception):
            default_in = sd.query_devices(kind="input")["index"]
    result = []
    for dev in devices:
        if dev["max_input_channels"] <= 0:
            continue
        result.append(
            InputDevice(
                index=int(dev["index"]),
                name=str(dev["name"]),
                hostapi=str(hostapis[dev["hostapi"]]["name"]),
                channels=int(dev["max_input_channels"]),
                default_rate_hz=float(dev["default_samplerate"]),
                is_default=dev["index"] == default_in,
            )
        )
    return result


def resolve_input_device(spec: str | int | None, devices: list[InputDevice] | None = None) -> InputDevice:
    """The input device named by ``spec``: an index, an exact name, or a unique part of a name.

    ``None`` means PortAudio's default input.
    """
    devices = list_input_devices() if devices is None else devices
    if not devices:
        raise DeviceError(
            "no audio input device found (no microphone, or no audio server running); see `streamcli devices`"
        )
    if spec is None or spec == "":
        for dev in devices:
            if dev.is_default:
                return dev
        return devices[0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        for dev in devices:
            if dev.index == index:
                return dev
        raise DeviceError(f"no input device with index {index}; see `streamcli devices`")
    exact = [d for d in devices if d.name == text]
    if exact:
        return exact[0]
    partial = [d for d in devices if text.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise DeviceError(f"no input device matches {text!r}; see `streamcli devices`")
    names = ", ".join(f"{d.index}: {d.name}" for d in partial)
    raise DeviceError(f"input device {text!r} is ambiguous ({names}); give its index")


def _portaudio_message(exc: BaseException, device: InputDevice, rate_hz: int, channels: int) -> str:
    text = str(exc).replace("\n", " ")
    low = text.lower()
    where = f"input device {device.index} ({device.name!r})"
    if "sample rate" in low or "samplerate" in low:
        return (
            f"{where} does not support {rate_hz} Hz ({text}); try --sample-rate {int(device.default_rate_hz)}"
        )
    if "channel" in low:
        return f"{where} does not support {channels} channel(s) ({text}); try --channels 1"
    if "unavailable" in low or "busy" in low or "-9985" in low:
        return f"{where} is busy or unavailable ({text}); close the program using it or pick another"
    return f"cannot open {where}: {text}"


def open_sounddevice_stream(
    device: InputDevice,
    rate_hz: int,
    channels: int,
    blocksize: int,
    callback: Callable[..., None],
    finished_callback: Callable[[], None],
) -> InputStreamLike:
    """A started-ready ``sounddevice.InputStream`` or a one-line DeviceError."""
    sd = import_sounddevice()
    try:
        sd.check_input_settings(device=device.index, samplerate=rate_hz, channels=channels, dtype="float32")
        return sd.InputStream(
            device=device.index,
            samplerate=rate_hz,
            channels=channels,
            blocksize=blocksize,
            dtype="float32",
            callback=callback,
            finished_callback=finished_callback,
        )
    except (sd.PortAudioError, ValueError) as exc:
        raise DeviceError(_portaudio_message(exc, device, rate_hz, channels)) from None


class FileInputStream:
    """An audio file played at ``speed`` x real time through an InputStream-shaped callback.

    Stands in for a microphone (``--input-file``); ``speed=0`` delivers as fast as the consumer
    allows, which tests use. ``end_of_input`` tells a natural end from a device failure.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        samples: np.ndarray | None = None,
        samplerate: float | None = None,
        blocksize: int = 0,
        speed: float = 1.0,
        callback: Callable[..., None] | None = None,
        finished_callback: Callable[[], None] | None = None,
        **_ignored: Any,
    ) -> None:
        self._audio = None
        if samples is None:
            if path is None:
                raise ValueError("FileInputStream needs a path or samples")
            # Streamed block by block while playing: a 3-hour file is never read into memory.
            self._audio = open_audio(Path(path), block_s=0.02 if blocksize <= 0 else 1.0)
            samplerate = self._audio.info.sample_rate
            self._data = None
            self.channels = int(self._audio.info.channels)
        else:
            data = np.asarray(samples, dtype=np.float32)
            self._data = data[:, None] if data.ndim == 1 else data
            self.channels = int(self._data.shape[1])
        if samplerate is None or samplerate <= 0:
            raise ValueError("FileInputStream needs a positive samplerate with samples")
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.samplerate = float(samplerate)
        # 20 ms blocks unless told otherwise: the order of what a sound card delivers.
        self.blocksize = blocksize if blocksize > 0 else max(1, round(self.samplerate * 0.02))
        if self._audio is not None:
            self._audio.block_s = self.blocksize / self.samplerate
        # A file is never dropped: the consumer's back-pressure slows it down instead (see
        # LiveTranscriber._on_audio); only a real device can overflow.
        self.blocking = True
        self.speed = speed
        self._callback = callback
        self._finished_callback = finished_callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.end_of_input = False
        self.error: AudioError | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamcli-file-input", daemon=True)
            self._thread.start()

    def _blocks(self) -> Iterator[np.ndarray]:
        if self._data is not None:
            for start in range(0, self._data.shape[0], self.blocksize):
                yield self._data[start : start + self.blocksize]
        else:
            assert self._audio is not None
            yield from self._audio.raw_blocks()

    def _run(self) -> None:
        start = time.monotonic()
        position = 0
        completed = False
        try:
            for block in self._blocks():
                if self._stop.is_set():
                    break
                position += block.shape[0]
                if self.speed > 0:
                    due = start + position / self.samplerate / self.speed
                    delay = due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                if self._callback is not None:
                    self._callback(np.ascontiguousarray(block), block.shape[0], None, _NO_FLAGS)
            else:
                completed = True
            self.end_of_input = completed
        except AudioError as exc:
            self.error = exc
        finally:
            if self._audio is not None:
                self._audio.close()
            if self._finished_callback is not None:
                self._finished_callback()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def close(self) -> None:
        self.stop()
        if self._thread is None and self._audio is not None:
            self._audio.close()


@dataclass(frozen=True)
class _Flags:
    input_overflow: bool = False


_NO_FLAGS = _Flags()
