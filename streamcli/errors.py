"""User-facing errors: each carries one clear line for the CLI to print (no traceback)."""

from __future__ import annotations


class StreamcliError(Exception):
    """Base class for errors the CLI reports as a single line with a non-zero exit."""

    exit_code: int = 1


class AudioError(StreamcliError):
    """The input audio is missing, unreadable, truncated or holds invalid samples."""


class ModelError(StreamcliError):
    """A model folder or name cannot be resolved, loaded or verified."""


class DeviceError(StreamcliError):
    """The requested execution device (CUDA, CPU) or audio device cannot be used."""
