"""Real `python -m streamcli` processes: pipes get text as it is decoded, stdin, a pty gets the live view."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from paths import SHARED

from streamcli.audio import read_audio

DEV = SHARED / "data" / "dev"
FLAC_A = DEV / "librispeech/test-other/1688/1688-142285-0002.flac"
WAV_B = DEV / "ljspeech/LJ001-0008.wav"
JFK_STEREO = DEV / "jfk/jfk_openai_whisper.flac"
ENV = {**os.environ, "PYTHONUNBUFFERED": "0", "COLUMNS": "160"}


def cmd(model_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamcli",
        "transcribe",
        *args,
        "--model",
        str(model_dir),
        "--device",
        "cpu",
    ]


def test_pipe_gets_each_line_when_it_is_final(test_zipformer_dir, tmp_path):
    a, rate = read_audio(WAV_B, target_rate=16000)
    b, _ = sf.read(FLAC_A, dtype="float32")
    path = tmp_path / "two.wav"
    sf.write(path, np.concatenate([a, np.zeros(2 * rate, np.float32), b]), rate)
    total_s = (a.size + 2 * rate + b.size) / rate
    proc = subprocess.Popen(
        cmd(test_zipformer_dir, str(path), "--realtime"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        t0 = time.monotonic()
        first = proc.stdout.readline()
        first_at_s = time.monotonic() - t0
        still_running = proc.poll() is None
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    assert first.strip(), "a finalized line arrived"
    # the first utterance's line came through the pipe while the second was still being fed at 1x
    assert still_running and first_at_s < total_s
    assert rest.strip()


def test_stdin_pipe_and_error_exit(test_zipformer_dir, tmp_path):
    wav = tmp_path / "jfk.wav"
    x, rate = sf.read(JFK_STEREO, dtype="float32")
    sf.write(wav, x[: 4 * rate], rate, subtype="PCM_24")  # stereo 44.1 kHz 24-bit through the stdin parser
    with open(wav, "rb") as handle:
        piped = subprocess.run(
            cmd(test_zipformer_dir, "-"), stdin=handle, capture_output=True, env=ENV, timeout=120
        )
    direct = subprocess.run(cmd(test_zipformer_dir, str(wav)), capture_output=True, env=ENV, timeout=120)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == direct.stdout and piped.stdout.strip()

    missing = subprocess.run(
        cmd(test_zipformer_dir, str(tmp_path / "nope.flac"), str(wav)),
        capture_output=True,
        env=ENV,
        timeout=120,
    )
    assert missing.returncode == 1
    err = missing.stderr.decode()
    assert "Traceback" not in err
    assert err.splitlines()[0] == f"error: {tmp_path / 'nope.flac'}: no such file"
    # the good file was still transcribed
    assert (
        missing.stdout.decode()
        == f"==> {tmp_path / 'nope.flac'} <==\n==> {wav} <==\n" + direct.stdout.decode()
    )


def test_terminal_gets_the_live_view(test_zipformer_dir):
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        cmd(test_zipformer_dir, str(FLAC_A)),
        stdout=secondary,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen
    assert "\x1b[" in screen  # Rich drew in place (cursor movement / styles)
    assert "→" in screen and "00:0" in screen
    assert "RTF" in screen and "p95" in screen and "· CPU" in screen


@pytest.mark.parametrize("args", [[], ["models"]])
def test_bare_command_prints_its_help_not_an_error(args):
    """`streamcli` (or a command group) alone answers with its help on stdout, exit 0."""
    proc = subprocess.run([sys.executable, "-m", "streamcli", *args], capture_output=True, text=True,
                          env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: streamcli") and "error" not in proc.stderr
    assert ("transcribe" in proc.stdout) if not args else ("download" in proc.stdout)
    bad = subprocess.run([sys.executable, "-m", "streamcli", "bogus"], capture_output=True, text=True,
                         env=ENV, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: No such command")
