"""streamcli: streaming speech-to-text with ONNX streaming encoders.

The public API::

    from streamcli import RecognizerConfig, create_recognizer, transcribe

    recognizer = create_recognizer(RecognizerConfig(device="cpu"))
    segments, info = transcribe("talk.flac", recognizer)  # segments: a generator, decoded as consumed
    for segment in segments:
        print(segment.start, segment.end, segment.text)

Heavier modules (onnxruntime sessions, the second pass) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamcli.errors import AudioError, DeviceError, ModelError, StreamcliError
from streamcli.results import Result, Segment, Token, Word

if TYPE_CHECKING:
    from streamcli.families import create_recognizer
    from streamcli.recognizer import Recognizer, RecognizerConfig, Stream, StreamDriver
    from streamcli.transcription import TranscriptionInfo, transcribe

__all__ = [
    "AudioError",
    "DeviceError",
    "ModelError",
    "Recognizer",
    "RecognizerConfig",
    "Result",
    "Segment",
    "Stream",
    "StreamDriver",
    "StreamcliError",
    "Token",
    "TranscriptionInfo",
    "Word",
    "create_recognizer",
    "transcribe",
]
__version__ = "0.1.0"

_LAZY = {
    "Recognizer": "streamcli.recognizer",
    "RecognizerConfig": "streamcli.recognizer",
    "Stream": "streamcli.recognizer",
    "StreamDriver": "streamcli.recognizer",
    "create_recognizer": "streamcli.families",
    "TranscriptionInfo": "streamcli.transcription",
    "transcribe": "streamcli.transcription",
}


def __getattr__(name: str) -> Any:
    # `import streamcli` stays cheap (the CLI's --version, tests): onnxruntime loads on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamcli' has no attribute {name!r}")
