"""A streamcli server on a free port of 127.0.0.1, run in a thread for the serve tests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from paths import DEV, REPO

from streamcli.serve import ServeConfig, Server

SMALL_MODEL = REPO / "models" / "streamcli-wctc-en-small"  # one pass, fast: the protocol tests' model
FILE_A = DEV / "librispeech/test-clean/1089/1089-134686-0000.flac"
FILE_B = DEV / "librispeech/test-other/1688/1688-142285-0000.flac"


def pcm16(path: Path) -> bytes:
    """A 16 kHz file as 16-bit little-endian PCM, the bytes a client sends."""
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000
    return np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes()


def small_recognizer():  # noqa: ANN201
    from streamcli.families import create_recognizer
    from streamcli.recognizer import RecognizerConfig

    return create_recognizer(RecognizerConfig(model=str(SMALL_MODEL), device="cpu", threads=1))


class Running:
    def __init__(self, recognizer, **config) -> None:
        ports: list[int] = []
        self.server = Server(recognizer, ServeConfig(port=0, **config), on_ready=ports.append)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not ports and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"ws://127.0.0.1:{ports[0]}/"
        self.http = f"http://127.0.0.1:{ports[0]}/"

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(timeout=30)
