"""What ``streamcli serve`` is configured with, validated before the model loads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 2700
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: 32 s of 16 kHz PCM in one message is plenty
MAX_SAMPLE_RATE = 192_000
TOKEN_ENV = "STREAMCLI_TOKEN"


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_streams: int = 64  # connections (WebSocket) and file jobs (REST) together
    max_message_bytes: int = MAX_MESSAGE_BYTES
    idle_timeout_s: float = 30.0
    token: str | None = None
    # New connections are refused (1013) while a final closed now would wait longer than this.
    max_final_wait_s: float = 1.0
    refine: bool = True  # two-pass models: partials from the second pass's refinements
    # A connection stops being read while this much of its audio waits to be decoded (TCP back-pressure).
    max_queued_audio_s: float = 5.0
    # A write (answer, close) a client does not take within this long closes its connection.
    write_timeout_s: float = 10.0
    # Browser origins allowed besides the server's own page ("*": any); clients without Origin always.
    allow_origins: list[str] = field(default_factory=list)
    max_upload_bytes: int = 200 * 1024 * 1024  # REST uploads (streamed to a temporary file)
    max_file_jobs: int = 2  # REST transcriptions at once (each takes a stream slot while it runs)

    def validate(self) -> ServeConfig:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {self.port}")
        if not 1 <= self.max_streams <= 10_000:
            raise ValueError(f"--max-streams must be 1..10000, got {self.max_streams}")
        if not 0 < self.idle_timeout_s <= 86_400:
            raise ValueError(f"--idle-timeout must be 0..86400 s, got {self.idle_timeout_s}")
        if not self.max_final_wait_s > 0:
            raise ValueError(f"--max-final-wait must be > 0 s, got {self.max_final_wait_s}")
        if not 0.5 <= self.max_queued_audio_s <= 600:
            raise ValueError(f"--max-queued-audio must be 0.5..600 s, got {self.max_queued_audio_s}")
        if not 0.1 <= self.write_timeout_s <= 600:
            raise ValueError(f"--write-timeout must be 0.1..600 s, got {self.write_timeout_s}")
        if not 1024 <= self.max_message_bytes <= 64 << 20:
            raise ValueError(f"--max-message-kb must be 1..65536, got {self.max_message_bytes // 1024}")
        if not 1 <= self.max_file_jobs <= 64:
            raise ValueError(f"--max-file-jobs must be 1..64, got {self.max_file_jobs}")
        if self.token is not None and not self.token:
            raise ValueError("--token must not be empty")
        return self


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from --token, else --token-file (first line), else $STREAMCLI_TOKEN: the command line
    is visible to every user of the machine (ps), a file or the environment is not."""
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"--token-file {token_file}: cannot read it ({exc.__class__.__name__})"
            ) from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"--token-file {token_file}: the first line is empty")
        return token
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return token
