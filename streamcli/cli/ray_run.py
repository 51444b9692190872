"""`streamcli transcribe --ray ADDRESS`: the inputs on a Ray cluster (streamcli.cluster), followed on one
Rich progress bar (files, audio hours, throughput in audio-hours per hour, ETA, failures)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from streamcli.cli.common import err_console, print_error
from streamcli.cluster import MANIFEST_NAME, FileResult, Job, Manifest, RayBatch, connect, import_ray
from streamcli.formats import safe_text, write_atomic
from streamcli.recognizer import RecognizerConfig
from streamcli.registry import resolve_model


def say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False)


def plan_jobs(
    inputs: list[str], targets: dict[int, Path], overwrite: bool, manifest: Manifest | None
) -> list[Job]:
    """The inputs left to do; one whose output exists is complete (outputs are written atomically) and
    is skipped unless ``overwrite``, with a manifest line saying so."""
    jobs: list[Job] = []
    for index, name in enumerate(inputs):
        target = targets.get(index)
        job = Job(index, name, safe_text(name), target)
        if target is not None and target.exists() and not overwrite:
            if manifest is not None:
                manifest.add(FileResult(job.label, safe_text(str(target)), "skipped"))
            continue
        jobs.append(job)
    return jobs


class ResultSink:
    """On the driver, per finished input: the output written (atomically) or the error printed, the
    manifest line, the progress bar."""

    def __init__(self, total: int, manifest: Manifest | None) -> None:
        self.manifest = manifest
        self.failed = 0
        self.audio_s = 0.0
        self.started_s = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} files"),
            TextColumn("{task.fields[audio]}"),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        self.task = self.progress.add_task("transcribing", total=total, audio="", failures="")

    def __call__(self, job: Job, result: FileResult) -> None:
        if result.status == "ok":
            if job.target is not None:
                write_atomic(job.target, result.document or "")
            else:
                sys.stdout.write(f"==> {job.label} <==\n{result.document}")
                sys.stdout.flush()
            self.audio_s += result.duration_s or 0.0
        else:
            self.failed += 1
            print_error(result.error or f"{job.label}: failed")
        if self.manifest is not None:
            self.manifest.add(result)
        elapsed_h = (time.monotonic() - self.started_s) / 3600
        rate = f"{self.audio_s / 3600 / elapsed_h:.1f} audio-h/h" if elapsed_h > 0 else ""
        failures = f"{self.failed} failed" if self.failed else ""
        audio = f"{self.audio_s / 3600:.2f} h audio · {rate}"
        self.progress.update(self.task, advance=1, audio=audio, failures=failures)
        if not err_console.is_terminal:
            say(f"{result.status} {job.label}")


def run_on_ray(
    inputs: list[str],
    targets: dict[int, Path],
    fmt: str,
    config: RecognizerConfig,
    address: str,
    workers: int | None,
    threads_per_worker: int,
    overwrite: bool,
    folder: Path | None,
) -> int:
    """Transcribes ``inputs`` on Ray; returns how many failed."""
    if "-" in inputs:
        raise ValueError("--ray reads files, not stdin (-)")
    # Workers load the model from the same folder: resolved here, once, to an absolute path.
    model_folder = resolve_model(config.model).resolve()
    config = dataclasses.replace(config, model=str(model_folder), threads=threads_per_worker)
    started_s = time.monotonic()
    import_ray()  # without Ray: one line saying how to install it, before anything is written
    manifest = Manifest(folder / MANIFEST_NAME) if folder is not None else None
    jobs = plan_jobs(inputs, targets, overwrite, manifest)
    skipped = len(inputs) - len(jobs)
    if not jobs:  # everything is done: no cluster needed
        if manifest is not None:
            manifest.close()
        say(f"0 done, 0 failed, {skipped} skipped (outputs exist; --overwrite redoes them)")
        return 0
    ray, started_here = connect(address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_workers = workers or max(1, cpus // threads_per_worker)
    say(
        f"ray: {n_workers} workers × {threads_per_worker} threads ({cpus} CPUs in the cluster, started in "
        f"{time.monotonic() - started_s:.1f} s); {len(jobs)} inputs to do, {skipped} already done"
    )
    sink = ResultSink(len(jobs), manifest)
    gpus = 1.0 if config.device.startswith("cuda") else 0.0
    try:
        with sink.progress:
            RayBatch(config, fmt, n_workers, threads_per_worker, gpus).run(jobs, sink)
    finally:
        if manifest is not None:
            manifest.close()
        if started_here:
            ray.shutdown()
    say(
        f"{len(jobs) - sink.failed} done, {sink.failed} failed, {skipped} skipped; "
        f"{sink.audio_s / 3600:.2f} h of audio in {time.monotonic() - started_s:.1f} s"
    )
    return sink.failed
