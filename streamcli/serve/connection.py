"""One accepted WebSocket: a bounded outbox written by one sender task, every write under a timeout.

A client that does not read its answers fills its socket buffer; a write that does not complete within
``write_timeout_s`` (or an outbox grown past ``max_outbox`` messages) ends the connection, so its slot
is freed instead of being held for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

MAX_OUTBOX = 256  # unsent answers before a client counts as not reading
# At shutdown, how long a connection stays open after its final is sent: a client that sends before it
# reads (a lockstep Vosk client) reads the final as the answer to its next message, not a closed socket.
END_GRACE_S = 1.0


def parse_json(text: str) -> object:
    """JSON of a text message; ValueError with one line for anything json cannot take (a 5,000-digit
    number or a deeply nested value raise ValueError/RecursionError inside json, not JSONDecodeError)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("malformed JSON in a text message") from None


class ClientGone(Exception):
    """The client went away or stopped reading; the handler ends its session."""


class ServerEnding(Exception):
    """The server ended this session (shutdown): the handler sends what is queued and closes."""


class Connection:
    def __init__(self, websocket: WebSocket, write_timeout_s: float, max_outbox: int = MAX_OUTBOX) -> None:
        self.websocket = websocket
        self.write_timeout_s = write_timeout_s
        self.max_outbox = max_outbox
        self.loop = asyncio.get_running_loop()
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task | None = None
        self.gone = asyncio.Event()  # set when a write failed or timed out
        self.ending = asyncio.Event()  # set when the server ended the session (shutdown)

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop())

    def post(self, message: dict) -> None:
        """Queues a JSON message (event loop thread only)."""
        if self.gone.is_set():
            return
        if self._outbox.qsize() >= self.max_outbox:
            self.gone.set()  # not reading: the handler closes the connection
            return
        self._outbox.put_nowait(json.dumps(message, ensure_ascii=False))

    def post_threadsafe(self, message: dict) -> None:
        self.loop.call_soon_threadsafe(self.post, message)

    async def drain(self) -> None:
        """Waits until every queued message is written (or the client is gone)."""
        self._outbox.put_nowait(None)
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def _send_loop(self) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:
                return
            try:
                await asyncio.wait_for(self.websocket.send_text(text), self.write_timeout_s)
            except Exception:  # timed out, reset or closed: nothing more can reach this client
                self.gone.set()
                return

    async def receive(self, timeout_s: float) -> str | bytes:
        """The next message; raises TimeoutError when idle, ClientGone when the client left or stopped
        reading, ServerEnding when the server ended the session."""
        receive = asyncio.ensure_future(self.websocket.receive())
        gone = asyncio.ensure_future(self.gone.wait())
        ending = asyncio.ensure_future(self.ending.wait())
        try:
            done, _ = await asyncio.wait(
                {receive, gone, ending}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            gone.cancel()
            ending.cancel()
        if receive not in done:
            receive.cancel()
            if gone in done:
                raise ClientGone()
            if ending in done:
                raise ServerEnding()
            raise TimeoutError()
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            raise ClientGone()
        if message.get("bytes") is not None:
            return message["bytes"]
        return message.get("text") or ""

    async def until(self, event: asyncio.Event) -> None:
        """Waits for ``event``; ClientGone if the client goes first."""
        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.gone.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not event.is_set():
            raise ClientGone()

    async def end(self, reason: str = "server shutting down") -> None:
        """The server ended the session: what is queued is sent, the client's messages are read (and
        dropped) for END_GRACE_S, then the connection closes with 1001."""
        deadline = self.loop.time() + END_GRACE_S
        with contextlib.suppress(ClientGone, ServerEnding):
            while (left := deadline - self.loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    self.ending.clear()
                    await self.receive(left)
        await self.close(1001, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Sends what is queued, then the close frame, each under the write timeout."""
        if not self.gone.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.drain(), self.write_timeout_s)
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.websocket.close(code, reason[:120]), self.write_timeout_s)

    async def fail(self, error: dict, code: int, reason: str) -> None:
        """An error message, then the close frame with the reason."""
        self.post(error)
        await self.close(code, reason)


__all__ = ["ClientGone", "Connection", "WebSocketDisconnect"]
