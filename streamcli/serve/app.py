"""The server: one Starlette app on uvicorn, one port for every protocol, one scheduler for every stream.

Routes: ``/`` (the captions page; WebSocket: the Vosk protocol, :mod:`streamcli.serve.vosk`),
``/v1/audio/transcriptions`` and ``/v1/models`` (OpenAI REST, :mod:`streamcli.serve.openai_api`),
``/v1/realtime`` (OpenAI Realtime transcription, :mod:`streamcli.serve.realtime`), ``/healthz``,
``/readyz``, ``/metrics``.

Gates, in order, for every request but the health checks: the browser origin (a page from another
origin gets 403: cross-site WebSocket hijacking), the token (401), then capacity: at most
``max_streams`` connections and file jobs at once, counted from the moment they connect (a slot is
taken before anything is read), and none while finals are behind or the second pass is full (1013 /
503). Shutdown (SIGINT/SIGTERM or :meth:`Server.stop`): new audio is dropped, every open stream gets
its final text, then the sockets close; a worker that dies stops the server and ``run()`` raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from streamcli.errors import StreamcliError
from streamcli.recognizer import RecognizerLike
from streamcli.serve import openai_api, realtime, vosk
from streamcli.serve.config import ServeConfig
from streamcli.serve.connection import Connection
from streamcli.serve.context import Busy
from streamcli.serve.metrics import ServerMetrics
from streamcli.serve.scheduler import Scheduler, Session

log = logging.getLogger("streamcli.serve")
PAGE = Path(__file__).resolve().parent.parent / "serve_page.html"
# Share of the second-pass worker's time the admitted streams may need (finals_capacity). Measured with
# scripts/load_serve.py --stagger 20 (2 cores): at a cost of ~0.02 s per audio second, 16 streams had
# every final within 1 s of eof (p95 0.56 s), 32 (0.64 of the worker) p95 1.9 s, 47 p95 4.5 s.
FINALS_UTILIZATION = 0.5
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ServerError(StreamcliError):
    """The server stopped because its worker died (the process must fail: one line, exit 1)."""


def token_given(connection: HTTPConnection) -> str:
    """The token a client sent: ``?token=`` or ``Authorization: Bearer`` (scheme case-insensitive, as
    HTTP says; the OpenAI SDKs send ``Bearer KEY``)."""
    given = connection.query_params.get("token", "")
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if not given and scheme.lower() == "bearer":
        given = value.strip()
    return given


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """``run()`` serves until SIGINT/SIGTERM (or :meth:`stop`); ``on_ready(port)`` once it listens."""

    def __init__(
        self, recognizer: RecognizerLike, config: ServeConfig, on_ready: Callable[[int], None] | None = None
    ) -> None:
        self.recognizer = recognizer
        self.config = config.validate()
        self.metrics = ServerMetrics()
        self.scheduler = Scheduler(recognizer, on_fatal=lambda exc: self.stop())
        self.scheduler.on_tick = self._on_tick
        if self.scheduler.finals is not None:
            self.scheduler.finals.on_final_latency = self.metrics.final_seconds.observe
        self.on_ready = on_ready
        self.port: int | None = None
        self.slots = 0  # connections and file jobs holding a stream slot (event loop thread)
        self._audio_published_s = 0.0
        self._page_html = PAGE.read_text(encoding="utf-8")  # read once, served at every GET /
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutting_down = False
        self.app = self._build_app()

    # ----- gates --------------------------------------------------------------------------------------
    def origin_allowed(self, connection: HTTPConnection) -> bool:
        """Programs send no Origin; browsers do: allowed are the server's own page (Origin = this Host,
        and on a loopback-bound server a loopback Host: DNS rebinding), --allow-origin, or "*"."""
        origin = connection.headers.get("origin")
        if origin is None:
            return True
        allowed = self.config.allow_origins
        if "*" in allowed or origin.rstrip("/") in (o.rstrip("/") for o in allowed):
            return True
        host = connection.headers.get("host", "")
        if urlsplit(origin).netloc.lower() != host.lower() or not host:
            return False
        if _is_loopback(self.config.host):
            return _is_loopback(urlsplit("//" + host).hostname or "")
        return True

    def token_ok(self, connection: HTTPConnection) -> bool:
        if self.config.token is None:
            return True
        return hmac.compare_digest(token_given(connection).encode(), self.config.token.encode())

    def check_capacity(self) -> None:
        """Raises Busy when one more stream would exceed a limit (see the module docstring)."""
        if self._shutting_down:
            raise Busy("server shutting down")
        if self.slots >= self.config.max_streams:
            raise Busy(f"server busy: {self.config.max_streams} streams already open (--max-streams)")
        # Refuse newcomers before the streams already open see their finals degrade: when finals are
        # behind now, or when one more stream would need more second pass than the worker has.
        wait_s = self.scheduler.final_wait_s()
        if wait_s > self.config.max_final_wait_s:
            raise Busy(
                f"server busy: finals {wait_s:.1f} s behind "
                f"(--max-final-wait {self.config.max_final_wait_s:g} s)"
            )
        capacity = self.finals_capacity()
        if self.slots + 1 > capacity:
            raise Busy(f"server busy: the second pass keeps up with {int(capacity)} real-time streams")

    def finals_capacity(self) -> float:
        """Real-time streams the second pass keeps up with at its measured cost (inf: unmeasured), at
        FINALS_UTILIZATION of the worker: a queue served near 100 % busy waits without bound."""
        finals = self.scheduler.finals
        cost = finals.seconds_per_audio_s if finals is not None else 0.0
        return FINALS_UTILIZATION / cost if cost > 0 else float("inf")

    def take_slot(self, protocol: str) -> Callable[[], None]:
        """Takes one stream slot (raises Busy when none is free); returns its release (idempotent)."""
        try:
            self.check_capacity()
        except Busy:
            self.metrics.refused_total.labels("capacity").inc()
            raise
        self.slots += 1
        self.metrics.streams_open.set(self.slots)
        self.metrics.streams_total.labels(protocol).inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.slots -= 1
                self.metrics.streams_open.set(self.slots)

        return release

    async def wait_for_backlog(self, session: Session, connection: Connection) -> None:
        """Back-pressure: stop reading this client while too much of its audio waits to be decoded."""
        while self.scheduler.backlog_s(session) > self.config.max_queued_audio_s and self.scheduler.alive:
            if connection.gone.is_set() or connection.ending.is_set():
                return
            await asyncio.sleep(0.02)

    def _on_tick(self, streams: int, seconds: float) -> None:
        self.metrics.first_pass_seconds.observe(seconds)

    # ----- the app ------------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        routes = [
            Route("/", self._page, methods=["GET", "HEAD"]),
            Route("/index.html", self._page, methods=["GET", "HEAD"]),
            Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self._readyz, methods=["GET", "HEAD"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            *openai_api.routes(self),
            WebSocketRoute("/v1/realtime", self._realtime),
            WebSocketRoute("/", self._vosk),
            WebSocketRoute("/{path:path}", self._vosk),  # vosk-server answers on any path
        ]
        app = Starlette(routes=routes)
        return _Gate(app, self)

    async def _page(self, request: Request) -> Response:
        return HTMLResponse(self._page_html)

    async def _healthz(self, request: Request) -> Response:
        alive = self.scheduler.alive
        return JSONResponse({"alive": alive, "streams": self.slots}, status_code=200 if alive else 503)

    async def _readyz(self, request: Request) -> Response:
        try:
            self.check_capacity()
            ready, reason = self.scheduler.alive, ""
        except Busy as exc:
            ready, reason = False, str(exc)
        body = {
            "ready": ready,
            "model": self.recognizer.info.name,
            "streams": self.slots,
            "max_streams": self.config.max_streams,
        }
        if reason:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        m = self.metrics
        audio_s = self.scheduler.audio_s  # the scheduler counts; the counter moves by what is new
        m.audio_seconds_total.inc(max(0.0, audio_s - self._audio_published_s))
        self._audio_published_s = audio_s
        m.finals_queue.set(self.scheduler.finals.backlog if self.scheduler.finals is not None else 0)
        m.rtf.set(self.scheduler.busy_s / self.scheduler.audio_s if self.scheduler.audio_s else 0.0)
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _vosk(self, websocket: WebSocket) -> None:
        await self._websocket(websocket, "vosk", vosk.handle)

    async def _realtime(self, websocket: WebSocket) -> None:
        await self._websocket(websocket, "realtime", realtime.handle)

    async def _websocket(self, websocket: WebSocket, protocol: str, handler: Callable[..., Any]) -> None:
        await websocket.accept()
        connection = Connection(websocket, self.config.write_timeout_s)
        connection.start()
        try:
            release = self.take_slot(protocol)
            try:
                await handler(self, connection)
            finally:
                release()
        except Busy as exc:
            await connection.fail(busy_message(protocol, str(exc)), 1013, str(exc))
        finally:
            await connection.close(1000)

    # ----- life cycle ---------------------------------------------------------------------------------
    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        sock.listen(2048)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            self.app,
            ws="websockets-sansio",
            ws_max_size=self.config.max_message_bytes,
            # Audio barely compresses, and a deflated message may inflate to far more than it weighs
            # on the wire: memory is bounded by what arrives.
            ws_per_message_deflate=False,
            ws_ping_interval=20,
            ws_ping_timeout=20,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=64 * 1024,
        )
        uv_server = _Uvicorn(uv_config)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._loop.add_signal_handler(sig, self._stopping.set)
        self.scheduler.start()
        serving = asyncio.create_task(uv_server.serve(sockets=[sock]))
        while not uv_server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # raises what stopped it
        if self.on_ready is not None:
            self.on_ready(self.port)
        await self._stopping.wait()
        # Graceful: no new streams, audio arriving now is dropped, open streams get their finals, then
        # the connections close (the handlers return once their final is sent).
        self._shutting_down = True
        await self._loop.run_in_executor(None, self.scheduler.finalize_all)
        deadline = time.monotonic() + 3
        while self.slots and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        uv_server.should_exit = True
        await serving
        sock.close()
        self.scheduler.stop()
        if self.scheduler.error is not None:
            raise ServerError(f"the serve worker failed: {self.scheduler.error!r}")

    def stop(self) -> None:
        """Graceful stop; callable from any thread."""
        if self._stopping is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)

    def run(self) -> None:
        asyncio.run(self.serve())


def busy_message(protocol: str, message: str) -> dict:
    """"Server busy" in the protocol's own shape (Vosk: {"error"}; Realtime: an error event)."""
    if protocol == "realtime":
        return realtime.error_event(message, "rate_limit_error", "server_busy")
    return {"error": message}


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal handling (ours finalizes open streams first) and without
    re-raising the signal after shutdown (the process exits 0 after a graceful stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Gate:
    """Origin and token checks before any route (health checks need neither token nor origin)."""

    OPEN_PATHS = ("/healthz", "/readyz")

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    def needs_token(self, path: str, kind: str) -> bool:
        """Everything but the health checks and the captions page itself (its WebSocket needs it)."""
        return path not in self.OPEN_PATHS and not (kind == "http" and path in ("/", "/index.html"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        path = scope.get("path", "")
        refusal: tuple[int, str, str] | None = None
        if not self.server.origin_allowed(connection):
            refusal = (403, "origin not allowed (see --allow-origin)", "origin_not_allowed")
        elif self.needs_token(path, scope["type"]) and not self.server.token_ok(connection):
            refusal = (401, "missing or wrong token", "invalid_api_key")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, code = refusal
        self.server.metrics.refused_total.labels("origin" if status == 403 else "token").inc()
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})
        response = Response(body + "\n", status_code=status, media_type="application/json")
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive, send)
            await websocket.send_denial_response(response)
        else:
            await response(scope, receive, send)
