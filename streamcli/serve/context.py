"""What a protocol handler may use of the server (the server implements it; handlers never import it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamcli.recognizer import RecognizerLike
from streamcli.serve.config import ServeConfig
from streamcli.serve.connection import Connection
from streamcli.serve.metrics import ServerMetrics
from streamcli.serve.scheduler import Scheduler, Session


class Busy(Exception):
    """No capacity for one more stream; the message says why."""


class ServerContext(Protocol):
    config: ServeConfig
    recognizer: RecognizerLike
    scheduler: Scheduler
    metrics: ServerMetrics

    def check_capacity(self) -> None:
        """Raises Busy when one more stream would exceed a limit."""
        ...

    def take_slot(self, protocol: str) -> Callable[[], None]:
        """Takes a stream slot (Busy when none is free); returns its release (idempotent)."""
        ...

    async def wait_for_backlog(self, session: Session, connection: Connection) -> None:
        """Back-pressure: returns once this session's queued audio is under the limit."""
        ...
