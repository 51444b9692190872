"""`streamcli transcribe --ray local`: a local Ray (started by the test, 2 CPUs) gives the same outputs as one
process, a complete manifest, skips finished files on a rerun, and retries the files of a killed worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from paths import DEV, REPO
from typer.testing import CliRunner

from streamcli.cli import app

ray = pytest.importorskip("ray")

SMALL_MODEL = REPO / "models" / "streamcli-wctc-en-small"
FILES = sorted((DEV / "librispeech/test-clean/1089").glob("*.flac"))[:4]
OPTIONS = ["--model", str(SMALL_MODEL), "--device", "cpu"]
runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for f in FILES:
        shutil.copy(f, folder / f.name)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav")
    return folder


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    result = runner.invoke(
        app, ["transcribe", str(inputs / "*.flac"), "-o", f"{out}/", "-f", "json", *OPTIONS, "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def ray_run(inputs: Path, out: Path):  # noqa: ANN201
    """`streamcli transcribe DIR/* -o OUT/ -f json --ray local --workers 2` through the CLI."""
    args = ["transcribe", str(inputs / "*"), "-o", f"{out}/", "-f", "json", *OPTIONS]
    return runner.invoke(app, [*args, "--ray", "local", "--workers", "2"])


def test_ray_outputs_equal_one_process_and_the_manifest_is_complete(inputs, single, local_ray, tmp_path):
    out = tmp_path / "out"
    result = ray_run(inputs, out)
    assert result.exit_code == 1, result.output  # broken.wav failed, the others did not
    assert "broken.wav" in result.output and "1 of 5 inputs failed" in result.output
    for f in FILES:
        assert (out / f"{f.stem}.json").read_text() == (single / f"{f.stem}.json").read_text()
    records = manifest(out)
    assert len(records) == 5 and {r["status"] for r in records} == {"ok", "failed"}
    ok = [r for r in records if r["status"] == "ok"]
    assert all(r["duration_s"] > 0 and r["seconds"] > 0 and r["output"].endswith(".json") for r in ok)
    assert not (out / "broken.json").exists()
    failed = next(r for r in records if r["status"] == "failed")
    assert "broken.wav" in failed["error"]

    # A rerun skips what is done and tries the failed one again.
    again = ray_run(inputs, out)
    assert again.exit_code == 1
    rerun = manifest(out)[5:]
    assert sorted(r["status"] for r in rerun) == ["failed", "skipped", "skipped", "skipped", "skipped"]


def test_a_killed_worker_has_its_files_retried(inputs, single, local_ray, tmp_path):
    from streamcli.cli.common import recognizer_config
    from streamcli.cluster import FileResult, Job, RayBatch

    out = tmp_path / "out"
    out.mkdir()
    config = recognizer_config(str(SMALL_MODEL), "cpu", 1)
    batch = RayBatch(config, "json", workers=2, threads_per_worker=1)
    names = [str(inputs / f.name) for f in FILES]
    jobs = [Job(i, name, name, out / f"{Path(name).stem}.json") for i, name in enumerate(names)]
    results: list[FileResult] = []
    killed: list[int] = []

    def on_result(job: Job, result: FileResult) -> None:
        results.append(result)
        if not killed and batch.in_flight:  # kill a worker that holds a file right now
            pid = batch.busy_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        if result.status == "ok":
            (out / job.target.name).write_text(result.document)

    thread = threading.Thread(target=batch.run, args=(jobs, on_result))
    thread.start()
    thread.join(timeout=300)
    assert killed and not thread.is_alive()
    assert sorted(r.status for r in results) == ["ok"] * 4
    assert max(r.attempts for r in results) == 2  # the killed worker's file, on a new worker
    for f in FILES:
        assert (out / f"{f.stem}.json").read_text() == (single / f"{f.stem}.json").read_text()


def test_without_ray_one_line_says_how_to_install(monkeypatch, inputs):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = runner.invoke(app, ["transcribe", str(inputs / "*.flac"), *OPTIONS, "--ray", "local"])
    assert result.exit_code != 0
    assert "pip install 'streamcli[ray]'" in result.output and "Traceback" not in result.output
