"""Transcribing many files on a Ray cluster: one recognizer per worker (an actor), results written by
the driver.

Each worker loads the model once and transcribes whole files with :func:`streamcli.transcribe` (its
second pass batched inside it, as in one process); it returns the rendered document, which the driver
writes atomically, so an output is either complete or absent, also after Ctrl-C or a dead worker.
The driver keeps one file in flight per worker, appends one JSON line per finished input to the
manifest as results arrive, and hands a file whose worker died (killed, out of memory) to a new
worker, up to ``MAX_ATTEMPTS`` times. Inputs must be readable by the workers under the same name
(shared storage on a cluster); the model folder too.

Ray is an optional extra (``pip install 'streamcli[ray]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamcli.errors import StreamcliError
from streamcli.formats import safe_text
from streamcli.recognizer import RecognizerConfig

MAX_ATTEMPTS = 3  # a file whose worker died is given to a new worker at most this many times in all
MANIFEST_NAME = "manifest.jsonl"


class RayMissing(StreamcliError):
    pass


@dataclass(frozen=True)
class Job:
    index: int
    name: str  # the input as given (may hold surrogate escapes: an odd file name)
    label: str  # printable name (the document's "file" field)
    target: Path | None  # the output; None: the text goes to stdout


@dataclass
class FileResult:
    """One input's outcome: a manifest line."""

    input: str
    output: str | None
    status: str  # "ok", "failed" or "skipped"
    duration_s: float | None = None
    seconds: float | None = None
    error: str | None = None
    attempts: int = 1
    document: str | None = field(default=None, repr=False)  # the rendered output (not in the manifest)

    def manifest_line(self) -> str:
        record = {k: v for k, v in asdict(self).items() if k != "document"}
        return json.dumps(record, ensure_ascii=False)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing("--ray needs Ray: pip install 'streamcli[ray]'") from None
    return ray


class FileWorker:
    """What one Ray actor runs: a recognizer, loaded once, and whole files through it."""

    def __init__(self, config: RecognizerConfig) -> None:
        from streamcli.families import create_recognizer

        self.recognizer = create_recognizer(config)

    def pid(self) -> int:
        return os.getpid()

    def transcribe(self, name: str, label: str, fmt: str) -> dict:
        """The document of one file, byte for byte what ``streamcli transcribe -o`` writes (the same
        DocumentWriter, into a private temporary folder), or the one-line error."""
        from streamcli.formats import DocumentWriter
        from streamcli.transcription import transcribe

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="streamcli-ray-") as folder:
            path = Path(folder) / f"out.{fmt}"
            writer = DocumentWriter(path, fmt, file=label)
            try:
                segments, info = transcribe(name, self.recognizer)
                for segment in segments:
                    writer.add(segment)
                writer.commit()
            except StreamcliError as exc:  # the same one-line reasons as one process gives
                writer.abort()
                return {"error": str(exc), "seconds": time.perf_counter() - started}
            except OSError as exc:
                writer.abort()
                reason = f"{label}: cannot read ({exc.strerror or exc})"
                return {"error": reason, "seconds": time.perf_counter() - started}
            document = path.read_text(encoding="utf-8")
        duration = info.audio.duration_s if info.audio is not None else None
        return {"document": document, "duration_s": duration, "seconds": time.perf_counter() - started}


def connect(address: str) -> tuple[Any, bool]:
    """``local`` starts Ray on this machine; ``auto`` or ``ray://HOST:PORT`` joins a running cluster.
    Returns (ray, whether this call started it: the caller then shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address == "local":
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray, True


class RayBatch:
    """Runs jobs on ``workers`` actors; ``on_result`` is called on the driver for each finished input."""

    def __init__(
        self,
        config: RecognizerConfig,
        fmt: str,
        workers: int,
        threads_per_worker: int,
        gpus_per_worker: float = 0.0,
    ) -> None:
        self.config = config
        self.fmt = fmt
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.ray = import_ray()
        self._actor_class = self.ray.remote(FileWorker).options(
            num_cpus=threads_per_worker, num_gpus=gpus_per_worker, max_restarts=0
        )
        self._actors: list[Any] = []
        self.in_flight: dict[Any, tuple[Job, Any, int]] = {}  # ObjectRef -> (job, actor, attempt)

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self.config)

    def busy_pids(self) -> list[int]:
        """Process ids of the workers with a file in flight (tests kill one)."""
        busy = {id(actor): actor for _, actor, _ in self.in_flight.values()}
        return [self.ray.get(actor.pid.remote(), timeout=30) for actor in busy.values()]

    def run(self, jobs: list[Job], on_result: Callable[[Job, FileResult], None]) -> None:
        ray = self.ray
        queue: deque[tuple[Job, int]] = deque((job, 1) for job in jobs)
        idle = [self._new_actor() for _ in range(min(self.workers, len(jobs)))]
        self._actors = list(idle)
        try:
            while queue or self.in_flight:
                while queue and idle:
                    job, attempt = queue.popleft()
                    actor = idle.pop()
                    ref = actor.transcribe.remote(job.name, job.label, self.fmt)
                    self.in_flight[ref] = (job, actor, attempt)
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    job, actor, attempt = self.in_flight.pop(ref)
                    try:
                        value = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                        # The worker died with this file: a fresh worker takes it (and the next ones).
                        replacement = self._new_actor()
                        self._actors = [a for a in self._actors if a is not actor] + [replacement]
                        idle.append(replacement)
                        if attempt < MAX_ATTEMPTS:
                            queue.appendleft((job, attempt + 1))
                        else:
                            reason = (
                                f"{job.label}: its worker died {attempt} times ({exc.__class__.__name__})"
                            )
                            on_result(
                                job,
                                FileResult(job.label, _out(job), "failed", error=reason, attempts=attempt),
                            )
                        continue
                    idle.append(actor)
                    if "error" in value:
                        result = FileResult(
                            job.label,
                            _out(job),
                            "failed",
                            seconds=value["seconds"],
                            error=value["error"],
                            attempts=attempt,
                        )
                    else:
                        result = FileResult(
                            job.label,
                            _out(job),
                            "ok",
                            value["duration_s"],
                            value["seconds"],
                            attempts=attempt,
                            document=value["document"],
                        )
                    on_result(job, result)
        finally:
            self.stop()

    def stop(self) -> None:
        """Cancels what is in flight and ends the workers (Ctrl-C, errors, or done)."""
        for ref in list(self.in_flight):
            with contextlib.suppress(Exception):  # already finished, or its worker gone
                self.ray.cancel(ref, force=True)
        self.in_flight.clear()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self._actors = []


def _out(job: Job) -> str | None:
    return None if job.target is None else safe_text(str(job.target))


class Manifest:
    """``DIR/manifest.jsonl``: one line per finished input, appended and flushed as results arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, result: FileResult) -> None:
        self._file.write(result.manifest_line() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
