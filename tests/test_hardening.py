"""Bad input, hostile caches and exhausted machines: one clear line, nothing destroyed, bounded resources.

Sections follow the kinds of trouble (see the README's error section); test names say the behaviour.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from live_fakes import FakeRecognizer, bursts
from local_http_server import Server
from typer.testing import CliRunner

from streamcli import registry
from streamcli.audio import open_audio
from streamcli.capture import FileInputStream
from streamcli.cli import app
from streamcli.errors import AudioError, ModelError, StreamcliError
from streamcli.families import create_recognizer
from streamcli.formats import DocumentWriter, SegmentWriter, render, sweep_stale_temp_files, write_atomic
from streamcli.live import LiveTranscriber
from streamcli.recognizer import RecognizerConfig
from streamcli.registry import KnownModel, ModelFile
from streamcli.results import Segment, Token, Word
from streamcli.tokens import TokenTable

runner = CliRunner()


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "a.wav"
    sf.write(path, bursts(16000, [(0.3, 0.0), (0.6, 0.3), (1.5, 0.0)]), 16000)
    return path


@pytest.fixture
def model(test_zipformer_dir) -> list[str]:
    return ["--model", str(test_zipformer_dir), "--device", "cpu", "--threads", "1"]


# ----- an output that is an input, an extension that is no format --------------------------------
def test_output_that_is_the_input_is_refused(wav, model):
    before = wav.read_bytes()
    result = runner.invoke(app, ["transcribe", str(wav), "-o", str(wav), *model])
    assert result.exit_code == 2 and "not an output format" in result.output
    assert wav.read_bytes() == before
    result = runner.invoke(app, ["transcribe", str(wav), "-o", str(wav), "--format", "txt", *model])
    assert result.exit_code == 2 and "is the input" in result.output
    assert wav.read_bytes() == before


def test_folder_mode_skips_an_input_that_is_its_own_output(tmp_path, model, wav):
    clash = tmp_path / "b.txt"  # its output in folder mode is tmp_path/b.txt: itself
    shutil.copy(wav, clash)
    before = clash.read_bytes()
    result = runner.invoke(app, ["transcribe", str(wav), str(clash), "-o", str(tmp_path), *model])
    assert (
        result.exit_code == 1 and "is the input" in result.output and "1 of 2 inputs failed" in result.output
    )
    assert clash.read_bytes() == before
    assert (tmp_path / "a.txt").is_file()


# ----- planted links in the model cache -----------------------------------------------------------
def _model(base_url: str, content: dict[str, bytes]) -> KnownModel:
    return KnownModel(
        name="fake",
        family="zipformer-transducer",
        description="t",
        license="none",
        base_url=base_url,
        files=tuple(ModelFile(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in content.items()),
    )


def test_download_never_writes_through_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path / "cache"))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    content = {"encoder.onnx": b"x" * 5000, "tokens.txt": b"<blk> 0\n"}
    folder = tmp_path / "cache" / "fake"
    folder.mkdir(parents=True)
    for name in content:
        os.symlink(victim, folder / f"{name}.part")
        for attempt in range(3):
            os.symlink(victim, folder / f".{name}.{os.getpid()}.{attempt}.part")
    with Server(content) as server:
        registry.download_model(_model(server.url, content))
    assert victim.read_text() == "precious"
    assert (folder / "encoder.onnx").read_bytes() == content["encoder.onnx"]
    assert not (folder / "encoder.onnx").is_symlink()


# ----- a file source never drops audio ------------------------------------------------------------
def test_file_at_full_speed_is_not_dropped(tmp_path):
    path = tmp_path / "long.wav"
    audio = bursts(16000, [(1.0, 0.3), (1.5, 0.0)] * 4)
    sf.write(path, audio, 16000)
    session = LiveTranscriber(
        FakeRecognizer(decode_delay_s=0.002), input_file=path, file_speed=0, max_queued_s=0.2
    )
    summary = session.run()
    assert summary.dropped_blocks == 0
    assert summary.audio_s == pytest.approx(audio.shape[0] / 16000, abs=0.02)
    assert summary.stop_reason == "end-of-input"


# ----- live -o continues an existing file ---------------------------------------------------------
def _seg(start: float, text: str) -> Segment:
    return Segment(start, start + 1.0, text, [Word(text, start, start + 1.0)], [Token(text, start, 1)])


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "srt", "vtt"])
def test_live_output_appends(tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    first = SegmentWriter(path, fmt)
    first.write(_seg(0.0, "one"))
    first.write(_seg(2.0, "two"))
    first.close()
    earlier = path.read_text()
    second = SegmentWriter(path, fmt)
    second.write(_seg(0.0, "three"))
    second.close()
    text = path.read_text()
    assert text.startswith(earlier) and "three" in text
    if fmt == "srt":
        assert "\n3\n00:00:00,000 --> 00:00:01,000\nthree\n" in text
    if fmt == "vtt":
        assert text.count("WEBVTT") == 1
    if fmt == "jsonl":
        assert [json.loads(line)["text"] for line in text.splitlines()] == ["one", "two", "three"]


def test_a_line_cut_by_a_crash_is_closed_first(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"text": "whole"}\n{"text": "cut sho')
    writer = SegmentWriter(path, "jsonl")
    writer.write(_seg(0.0, "next"))
    writer.close()
    assert json.loads(path.read_text().splitlines()[-1])["text"] == "next"


# ----- the replaced file keeps its mode -----------------------------------------------------------
def test_write_atomic_keeps_a_private_mode(tmp_path):
    target = tmp_path / "private.txt"
    target.write_text("old")
    target.chmod(0o600)
    write_atomic(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.txt"
    umask = os.umask(0o022)
    try:
        write_atomic(fresh, "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


# ----- skip-and-continue --------------------------------------------------------------------------
def test_an_unwritable_output_fails_one_input_and_the_rest_go_on(tmp_path, wav, model):
    b = tmp_path / "b.wav"
    c = tmp_path / "c.wav"
    shutil.copy(wav, b)
    shutil.copy(wav, c)
    out = tmp_path / "out"
    (out / "b.txt").mkdir(parents=True)
    result = runner.invoke(app, ["transcribe", str(wav), str(b), str(c), "-o", str(out), *model])
    assert result.exit_code == 1
    assert f"{out / 'b.txt'}: it is a directory" in result.output
    assert "1 of 3 inputs failed" in result.output
    assert (out / "a.txt").is_file() and (out / "c.txt").is_file()


def test_non_utf8_names_are_one_failed_input(tmp_path, wav, model):
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.wav")
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(str(wav)) + b"\n" + os.fsencode(odd) + b"\n")
    result = runner.invoke(app, ["transcribe", "--files-from", str(listing), *model])
    assert result.exit_code == 1, result.output
    assert "caf\ufffd.wav: no such file" in result.output and "1 of 2 inputs failed" in result.output


def test_closed_stdin_is_one_line(model):
    code = (
        "import sys; from streamcli.cli import main; "
        "sys.argv = ['streamcli', 'transcribe', '-'] + sys.argv[1:]; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *model],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert proc.returncode == 1
    assert "standard input is closed" in proc.stderr and "Traceback" not in proc.stderr


# ----- stale temp files of killed runs are swept --------------------------------------------------
def test_stale_temp_files_are_swept(tmp_path):
    target = tmp_path / "out.txt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.txt.{dead.pid}.abcd.tmp"
    stale.write_text("whole transcript of a killed run")
    mine = tmp_path / f".out.txt.{os.getpid()}.live.tmp"
    mine.write_text("a writer that is still running")
    write_atomic(target, "new")
    assert not stale.exists() and mine.exists() and target.read_text() == "new"
    part = tmp_path / f".model.bin.{dead.pid}.0.part"
    part.write_bytes(b"partial")
    registry.sweep_partial_downloads(tmp_path)
    assert not part.exists()
    assert sweep_stale_temp_files(target) == []


def test_sigterm_during_a_download_leaves_no_part_file(tmp_path):
    code = """
import http.server, threading, time, sys, os
from streamcli import registry
from streamcli.cli import root as cli
import signal
signal.signal(signal.SIGTERM, cli._terminate)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '100000'); self.end_headers()
        self.wfile.write(b'x' * 1000); self.wfile.flush(); time.sleep(30)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
m = registry.KnownModel('fake', 'x', 'd', 'l', f'http://127.0.0.1:{srv.server_address[1]}',
                        (registry.ModelFile('big.bin', '0' * 64, 100000),))
print('ready', flush=True)
try:
    registry.download_model(m)
except SystemExit:
    print('cleaned', flush=True)
    raise
"""
    env = {**os.environ, "STREAMCLI_MODELS_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    assert list(tmp_path.rglob("*.part"))  # the download is under way
    proc.terminate()
    proc.wait(timeout=30)
    assert not list(tmp_path.rglob("*.part"))


# ----- every size option is bounded ---------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value,limit",
    [
        ("threads", 100000, "at most"),
        ("beam", 100000, "at most 64"),
        ("window_frames", 100000, "at most 3000"),
    ],
)
def test_size_options_are_bounded(test_zipformer_dir, field, value, limit):
    config = RecognizerConfig(model=str(test_zipformer_dir), **{field: value})
    with pytest.raises(ValueError, match=limit):
        config.validate()


def test_cli_refuses_huge_threads_in_one_line(wav, test_zipformer_dir):
    result = runner.invoke(
        app, ["transcribe", str(wav), "--model", str(test_zipformer_dir), "--threads", "100000"]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "at most" in result.output


# ----- bounded reads --------------------------------------------------------------------------------
def test_a_huge_fmt_chunk_is_not_buffered():
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 0xFFFFFFF0)
    stream = io.BytesIO(header + b"\0" * 64)
    with pytest.raises(AudioError, match="invalid WAV fmt chunk"):
        open_audio(stream)


def test_files_from_dev_zero_is_refused(wav, model):
    result = runner.invoke(app, ["transcribe", "--files-from", "/dev/zero", *model])
    assert result.exit_code == 2 and "larger than 16 MiB" in result.output


def test_live_input_file_is_streamed(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros(16000 * 5, np.float32), 16000)
    source = FileInputStream(path)
    assert source._data is None and source.samplerate == 16000
    source.close()


# ----- model metadata that lies --------------------------------------------------------------------
def _with_metadata(src: Path, dst: Path, file_prefix: str, changes: dict[str, str]) -> Path:
    import onnx

    shutil.copytree(src, dst)
    path = next(dst.glob(f"{file_prefix}*.onnx"))
    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key in changes:
            entry.value = changes[entry.key]
    onnx.save(proto, str(path))
    return dst


@pytest.mark.parametrize(
    "prefix,changes,message",
    [
        ("encoder", {"decode_chunk_len": "0"}, "decode_chunk_len=0"),
        ("encoder", {"decode_chunk_len": "-5"}, "decode_chunk_len=-5"),
        ("encoder", {"T": "100000000"}, "T=100000000"),
        ("encoder", {"decode_chunk_len": "50"}, "decode_chunk_len=50"),
        ("encoder", {"T": "45"}, "graph's input x takes"),
        ("decoder", {"context_size": "3"}, "context_size=3"),
        ("decoder", {"vocab_size": "400"}, "vocab_size=400"),
    ],
)
def test_lying_metadata_is_refused_at_load(test_zipformer_dir, tmp_path, prefix, changes, message):
    folder = _with_metadata(test_zipformer_dir, tmp_path / "m", prefix, changes)
    with pytest.raises(ModelError, match=message):
        create_recognizer(RecognizerConfig(model=str(folder), device="cpu"))


def test_token_tables_that_lie(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("<blk> 0\n▁HIGH 1\n▁PWNED 1\n")
    with pytest.raises(ModelError, match="appears twice"):
        TokenTable.from_file(path)
    path.write_text("<blk> 0\nx 10000000000\n")
    with pytest.raises(ModelError, match="beyond"):
        TokenTable.from_file(path)


# ----- downloads that trickle, read-only caches ---------------------------------------------------
def test_a_trickling_server_hits_the_deadline(tmp_path, monkeypatch):
    import http.server

    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "_DEADLINE_BASE_S", 1.0)
    monkeypatch.setattr(registry, "_CHUNK_BYTES", 1)

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        model = _model(f"http://127.0.0.1:{httpd.server_address[1]}", {"big.bin": b"x" * 1000})
        t0 = time.monotonic()
        with pytest.raises(ModelError, match="too slow"):
            registry.download_model(model)
        assert time.monotonic() - t0 < 10
    finally:
        httpd.shutdown()
    assert not (tmp_path / "cache" / "fake").exists()  # no empty folder left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_model_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake").chmod(0o500)
    with pytest.raises(ModelError, match="read-only"):
        registry.download_model(_model("http://127.0.0.1:9", {"a": b"a"}))


def test_read_only_message_when_access_says_no(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path))
    real_access = os.access
    monkeypatch.setattr(
        registry.os, "access", lambda p, mode: False if str(p).endswith("fake") else real_access(p, mode)
    )
    with pytest.raises(ModelError, match="read-only"):
        registry.download_model(_model("http://127.0.0.1:9", {"a": b"a"}))


# ----- messages ------------------------------------------------------------------------------------
def test_a_fifo_carries_wav(tmp_path, wav, model):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as out:
            out.write(wav.read_bytes())

    thread = threading.Thread(target=feed)
    thread.start()
    piped = runner.invoke(app, ["transcribe", str(fifo), *model])
    thread.join(timeout=30)
    direct = runner.invoke(app, ["transcribe", str(wav), *model])
    assert piped.exit_code == 0, piped.output
    assert piped.output == direct.output


def test_dev_zero_is_not_called_empty(model):
    result = runner.invoke(app, ["transcribe", "/dev/zero", *model])
    assert (
        result.exit_code == 1 and "not WAV data (only WAV can be read from a pipe or device)" in result.output
    )


def test_truncated_encoder_is_called_damaged(test_zipformer_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(test_zipformer_dir, folder)
    encoder = next(folder.glob("encoder*.onnx"))
    encoder.write_bytes(encoder.read_bytes()[: encoder.stat().st_size // 2])
    with pytest.raises(ModelError, match="damaged ONNX file"):
        create_recognizer(RecognizerConfig(model=str(folder), device="cpu"))


def test_usage_errors_are_one_line(wav):
    proc = subprocess.run(
        [sys.executable, "-m", "streamcli", "transcribe", str(wav), "--threads", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "--threads" in proc.stderr


def test_live_output_on_a_full_disk_names_the_file():
    writer = SegmentWriter("/dev/full", "txt")
    with pytest.raises(StreamcliError, match="cannot write /dev/full: No space left on device"):
        writer.write(_seg(0.0, "lost"))
    writer.close()


# ----- whole-file documents stream to disk --------------------------------------------------------
@pytest.mark.parametrize("fmt", ["txt", "json", "srt", "vtt"])
def test_streamed_document_equals_the_rendered_one(tmp_path, fmt):
    segments = [_seg(float(i), f'word "{i}" ünï') for i in range(50)] + [Segment(60.0, 61.0, "  ")]
    writer = DocumentWriter(tmp_path / f"out.{fmt}", fmt, file="talk.wav")
    for seg in segments:
        writer.add(seg)
    writer.commit()
    got = (tmp_path / f"out.{fmt}").read_text()
    want = render(segments, fmt, file="talk.wav")
    assert (json.loads(got) == json.loads(want)) if fmt == "json" else (got == want)
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{fmt}"]  # no spool or temp file left


def test_an_aborted_document_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("earlier")
    writer = DocumentWriter(target, "json", file="x")
    writer.add(_seg(0.0, "new"))
    writer.abort()
    assert target.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
