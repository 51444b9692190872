"""OpenAI-compatible REST: ``POST /v1/audio/transcriptions`` and ``GET /v1/models``.

A file upload is streamed to a temporary file (never held whole in memory; refused with 413 as soon
as it passes ``max_upload_bytes``, before it is all read) and transcribed by :func:`streamcli.transcribe`
on a thread, so the text equals ``streamcli transcribe``'s; its second pass shares the server's batched
worker. A job holds a stream slot while it runs and at most ``max_file_jobs`` run at once (429 beyond).
``stream=true`` answers with server-sent events, one ``transcript.text.delta`` per finalized segment
as it is produced, then ``transcript.text.done``. Errors have OpenAI's shape:
``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from streamcli.errors import StreamcliError
from streamcli.formats import render
from streamcli.results import Segment
from streamcli.serve.context import Busy, ServerContext

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
ENGLISH = ("en", "english")
COPY_BLOCK_BYTES = 1 << 20


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": None}}
        headers = {"Retry-After": "1"} if self.status in (429, 503) else {}
        if self.status == 413:
            headers["Connection"] = "close"  # the rest of the upload is not read: the connection ends
        return JSONResponse(body, status_code=self.status, headers=headers)


class _TooLarge(Exception):
    pass


def routes(server: ServerContext) -> list[Route]:
    api = OpenAIApi(server)
    return [
        Route("/v1/audio/transcriptions", api.transcriptions, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
    ]


def known_models(loaded: str) -> list[str]:
    """What ``streamcli models list`` knows: the loaded model first, then the shipped and downloadable."""
    from streamcli.registry import KNOWN_MODELS, shipped_models

    names = [loaded] + [folder.name for folder in shipped_models()] + list(KNOWN_MODELS)
    return list(dict.fromkeys(names))


class OpenAIApi:
    def __init__(self, server: ServerContext) -> None:
        self.server = server
        self.jobs = threading.BoundedSemaphore(server.config.max_file_jobs)

    async def models(self, request: Request) -> Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "streamcli"}
            for name in known_models(self.server.recognizer.info.name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def transcriptions(self, request: Request) -> Response:
        path: Path | None = None
        try:
            form, path = await self._receive(request)
            options = _options(form)
            if not self.jobs.acquire(blocking=False):
                raise ApiError(
                    429,
                    f"{self.server.config.max_file_jobs} transcriptions already running (--max-file-jobs)",
                    "rate_limit_exceeded",
                    "rate_limit_error",
                )
            try:
                release_slot = self.server.take_slot("rest")
            except Busy as exc:  # the message says which limit
                self.jobs.release()
                raise ApiError(503, str(exc), "server_busy", "server_error") from None
        except ApiError as exc:
            _remove(path)
            return exc.response()
        except ClientDisconnect:
            _remove(path)
            return Response(status_code=400)

        def release() -> None:
            release_slot()
            self.jobs.release()

        if options["stream"]:
            return StreamingResponse(
                self._events(path, release),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            segments, duration_s = await asyncio.to_thread(self._transcribe_all, path)
        except ApiError as exc:
            return exc.response()
        finally:
            release()
        return _document(segments, duration_s, options)

    async def _receive(self, request: Request) -> tuple[dict, Path]:
        """The multipart form with the file streamed to a temporary file (size-limited)."""
        limit = self.server.config.max_upload_bytes
        length = request.headers.get("content-length")
        too_large = ApiError(413, f"upload over the limit of {limit} bytes (--max-upload-mb)",
                             "file_too_large")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "expected multipart/form-data with a 'file' field", "invalid_request")
        received = 0
        receive = request.receive

        async def counting_receive():  # noqa: ANN202
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge()
            return message

        request._receive = counting_receive  # the form parser reads through this
        try:
            form = await request.form(max_files=1, max_fields=16)
        except _TooLarge:
            raise too_large from None
        except ClientDisconnect:
            raise
        except Exception as exc:  # the parser's own errors: one line
            raise ApiError(400, f"malformed multipart body: {exc}", "invalid_request") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            await form.close()
            raise ApiError(400, "the 'file' field (the audio) is missing", "invalid_request")
        suffix = Path(upload.filename or "").suffix[:10]
        handle, name = tempfile.mkstemp(prefix="streamcli-upload-", suffix=suffix)
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                while block := await upload.read(COPY_BLOCK_BYTES):
                    out.write(block)
        finally:
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            fields["timestamp_granularities[]"] = [
                v
                for k, v in form.multi_items()
                if k in ("timestamp_granularities[]", "timestamp_granularities")
            ]
            await form.close()
        if path.stat().st_size == 0:
            _remove(path)
            raise ApiError(400, "the uploaded file is empty", "invalid_audio")
        return fields, path

    def _start(self, path: Path) -> tuple[Iterator[Segment], float]:
        """(segments as they are finalized, the audio's duration in s); ApiError for bad audio."""
        from streamcli.transcription import transcribe

        try:
            segments, info = transcribe(str(path), self.server.recognizer)
        except StreamcliError as exc:
            raise ApiError(400, f"cannot read the upload as audio: {exc}", "invalid_audio") from None
        duration_s = info.audio.duration_s if info.audio is not None else None
        return _guarded(segments), float(duration_s or 0.0)

    def _transcribe_all(self, path: Path) -> tuple[list[Segment], float]:
        try:
            segments, duration_s = self._start(path)
            return list(segments), duration_s
        finally:
            _remove(path)

    async def _events(self, path: Path, release: Callable[[], None]) -> AsyncIterator[str]:
        """SSE: a delta per finalized segment while the file is decoded, then done."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Segment | ApiError | None] = asyncio.Queue()

        def work() -> None:
            try:
                for segment in self._start(path)[0]:
                    loop.call_soon_threadsafe(queue.put_nowait, segment)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except ApiError as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                _remove(path)

        task = asyncio.create_task(asyncio.to_thread(work))
        texts: list[str] = []
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, ApiError):
                    error = {"message": item.message, "type": item.kind, "code": item.code}
                    yield f"event: error\ndata: {json.dumps({'type': 'error', 'error': error})}\n\n"
                    return
                delta = item.text if not texts else " " + item.text
                texts.append(item.text)
                yield "data: " + json.dumps({"type": "transcript.text.delta", "delta": delta}) + "\n\n"
            done = {"type": "transcript.text.done", "text": " ".join(texts)}
            yield "data: " + json.dumps(done) + "\n\n"
        finally:
            with contextlib.suppress(Exception):
                await task
            release()


def _guarded(segments: Iterator[Segment]) -> Iterator[Segment]:
    try:
        yield from segments
    except StreamcliError as exc:  # an error in the audio met while decoding
        raise ApiError(400, f"cannot transcribe the upload: {exc}", "invalid_audio") from None


def _remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _options(form: dict) -> dict:
    fmt = str(form.get("response_format") or "json")
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt[:40]!r}",
            "invalid_value",
        )
    language = str(form.get("language") or "en")
    if language.lower() not in ENGLISH:
        raise ApiError(
            400,
            f"language {language[:20]!r}: this server transcribes English only ('en')",
            "unsupported_language",
        )
    granularities = list(form.get("timestamp_granularities[]") or [])
    for g in granularities:
        if g not in GRANULARITIES:
            raise ApiError(
                400, f"timestamp_granularities[] must be word or segment, got {g[:20]!r}", "invalid_value"
            )
    if granularities and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format=verbose_json", "invalid_value")
    stream = str(form.get("stream") or "false").lower()
    if stream not in ("true", "false"):
        raise ApiError(400, f"stream must be true or false, got {stream[:20]!r}", "invalid_value")
    if stream == "true" and fmt not in ("json", "text"):
        raise ApiError(
            400, "stream=true gives text events; use response_format json or text", "invalid_value"
        )
    return {"format": fmt, "granularities": granularities or ["segment"], "stream": stream == "true"}


def _document(segments: list[Segment], duration_s: float, options: dict) -> Response:
    text = " ".join(s.text for s in segments)
    fmt = options["format"]
    if fmt == "json":
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": round(duration_s, 3)}})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(render(segments, fmt))
    body: dict = {"task": "transcribe", "language": "english", "duration": round(duration_s, 3), "text": text}
    if "segment" in options["granularities"]:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": [t.id for t in s.tokens],
                "temperature": 0.0,
            }
            for i, s in enumerate(segments)
        ]
    if "word" in options["granularities"]:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for s in segments for w in s.words]
    return JSONResponse(body)
