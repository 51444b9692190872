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
    """Transcribes ``inputs`` on Ray; returns how many failed. Outputs that exist are skipped unless
    ``overwrite`` (they are complete: every output is written atomically)."""
    if "-" in inputs:
        raise ValueError("--ray reads files, not stdin (-)")
    # Workers load the model from the same folder: resolved here, once, to an absolute path.
    model_folder = resolve_model(config.model).resolve()
    config = dataclasses.replace(config, model=str(model_folder), threads=threads_per_worker)
    started_s = time.monotonic()
    import_ray()  # without Ray: one line saying how to install it, before anything is written
    manifest = Manifest(folder / MANIFEST_NAME) if folder is not None else None
    jobs: list[Job] = []
    failed = 0
    for index, name in enumerate(inputs):
        target = targets.get(index)
        job = Job(index, name, safe_text(name), target)
        if target is not None and target.exists() and not overwrite:
            if manifest is not None:
                manifest.add(FileResult(job.label, safe_text(str(target)), "skipped"))
            continue
        jobs.append(job)
    if not jobs:  # everything is done: no cluster needed
        if manifest is not None:
            manifest.close()
        done = f"0 done, 0 failed, {len(inputs)} skipped (outputs exist; --overwrite redoes them)"
        err_console.print(done, markup=False, highlight=False)
        return 0
    ray, started_here = connect(address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = 1.0 if config.device.startswith("cuda") else 0.0
    n_workers = workers or max(1, cpus // threads_per_worker)
    startup_s = time.monotonic() - started_s
    skipped = len(inputs) - len(jobs)
    err_console.print(
        f"ray: {n_workers} workers × {threads_per_worker} threads ({cpus} CPUs in the cluster, "
        f"started in {startup_s:.1f} s); {len(jobs)} inputs to do, {skipped} already done",
        markup=False,
        highlight=False,
    )
    progress = Progress(
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
    done_audio_s = 0.0
    run_started = time.monotonic()

    def on_result(job: Job, result: FileResult) -> None:
        nonlocal failed, done_audio_s
        if result.status == "ok":
            if job.target is not None:
                write_atomic(job.target, result.document or "")
            else:
                sys.stdout.write(f"==> {job.label} <==\n{result.document}")
                sys.stdout.flush()
            done_audio_s += result.duration_s or 0.0
        else:
            failed += 1
            print_error(result.error or f"{job.label}: failed")
        if manifest is not None:
            manifest.add(result)
        elapsed_h = (time.monotonic() - run_started) / 3600
        rate = f"{done_audio_s / 3600 / elapsed_h:.1f} audio-h/h" if elapsed_h > 0 else ""
        progress.update(
            task,
            advance=1,
            audio=f"{done_audio_s / 3600:.2f} h audio · {rate}",
            failures=f"{failed} failed" if failed else "",
        )
        if not err_console.is_terminal:
            err_console.print(f"{result.status} {job.label}", markup=False, highlight=False)

    batch = RayBatch(config, fmt, n_workers, threads_per_worker, gpus)
    try:
        with progress:
            task = progress.add_task("transcribing", total=len(jobs), audio="", failures="")
            batch.run(jobs, on_result)
    finally:
        if manifest is not None:
            manifest.close()
        if started_here:
            ray.shutdown()
    wall_s = time.monotonic() - started_s
    err_console.print(
        f"{len(jobs) - failed} done, {failed} failed, {skipped} skipped; "
        f"{done_audio_s / 3600:.2f} h of audio in {wall_s:.1f} s",
        markup=False,
        highlight=False,
    )
    return failed
