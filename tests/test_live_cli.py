"""`streamcli live` / `streamcli devices` through Typer's CliRunner, with a fake recognizer and fake
PortAudio where a real one cannot produce the situation (busy device, missing library)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import sys
from pathlib import Path

import pytest
import soundfile as sf
from live_fakes import FakeRecognizer, bursts
from typer.testing import CliRunner

from streamcli import capture
from streamcli.cli import app
from streamcli.errors import DeviceError

# After streamcli.cli: the command modules import their helpers from it (importing one of them
# first would be circular).
cli_live = importlib.import_module("streamcli.cli.live")

runner = CliRunner()


@pytest.fixture
def fake_model(monkeypatch):
    made = []

    def load(config):  # the RecognizerConfig live built from its options
        rec = FakeRecognizer(config.endpoint)
        rec.requested_window = (config.window_frames, config.overlap_frames)
        rec.requested_rescore = config.rescore
        made.append(rec)
        return rec

    monkeypatch.setattr(cli_live, "load_recognizer", load)
    return made


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "speech.wav"
    rate = 16000
    sf.write(path, bursts(rate, [(0.3, 0.0), (0.8, 0.3), (1.5, 0.0), (0.5, 0.3), (0.3, 0.0)]), rate)
    return path


def test_live_from_file_writes_each_format(fake_model, wav: Path, tmp_path: Path):
    for fmt in ("txt", "jsonl", "srt", "vtt"):
        out = tmp_path / f"out.{fmt}"
        stats = tmp_path / f"stats-{fmt}.json"
        speed = "1" if fmt == "txt" else "0"  # once at real time, then as fast as possible
        result = runner.invoke(
            app,
            [
                "live",
                "--input-speed",
                speed,
                "--input-file",
                str(wav),
                "-o",
                str(out),
                "--rule2-silence",
                "0.8",
                "--stats-json",
                str(stats),
            ],
        )
        assert result.exit_code == 0, result.output
        # Two bursts, split by the 1.5 s pause (rule 2 at 0.8 s): two finalized lines on stdout.
        lines = [x for x in result.stdout.splitlines() if x.startswith("[")]
        assert len(lines) == 2 and lines[0].startswith("[00:00:00.0] w3 w4"), result.stdout
        text = out.read_text()
        if fmt == "jsonl":
            rows = [json.loads(x) for x in text.splitlines()]
            assert [len(r["tokens"]) for r in rows] == [8, 5]
        elif fmt == "srt":
            assert text.startswith("1\n00:00:00,000 --> ") and "\n2\n" in text
        elif fmt == "vtt":
            assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")
        else:
            assert len(text.splitlines()) == 2
        summary = json.loads(stats.read_text())
        assert summary["segments"] == 2 and summary["stop_reason"] == "end-of-input"
        assert summary["audio_s"] == pytest.approx(3.4)
        assert summary["provider"] == "FakeExecutionProvider"
    # The endpoint options reach the recognizer's config.
    assert fake_model[0].endpoint.rule2_min_trailing_silence_s == 0.8


def test_live_duration_and_endpoint_options(fake_model, wav: Path, tmp_path: Path):
    out = tmp_path / "o.jsonl"
    result = runner.invoke(
        app,
        [
            "live",
            "--input-speed",
            "0",
            "--input-file",
            str(wav),
            "-o",
            str(out),
            "--duration",
            "1.0",
            "--max-utterance",
            "5",
            "--rule1-silence",
            "3",
            "--silence-from",
            "decoder",
            "--window",
            "200",
            "--overlap",
            "50",
            "--no-status",
        ],
    )
    assert result.exit_code == 0, result.output
    assert fake_model[0].requested_window == (200, 50)
    cfg = fake_model[0].endpoint
    assert (cfg.rule1_min_trailing_silence_s, cfg.rule3_min_utterance_length_s, cfg.silence_from) == (
        3.0,
        5.0,
        "decoder",
    )
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["end"] <= 1.0 + 1e-6  # stopped at 1.0 s of audio
    assert "stopped: duration" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "json"], "--format must be one of"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--rule2-silence", "-1"], "rule2_min_trailing_silence_s must be > 0"),
        (["--silence-from", "nowhere"], "silence_from must be one of"),
        (["--block-ms", "-5"], "--block-ms must be >= 0"),
        (["--input-speed", "-1"], "--input-speed must be >= 0"),
    ],
)
def test_bad_options_are_one_line_errors(fake_model, wav: Path, args, message):
    result = runner.invoke(app, ["live", "--input-file", str(wav), *args])
    assert result.exit_code == 2
    errors = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr


def test_missing_input_file_is_one_line(fake_model, tmp_path: Path):
    result = runner.invoke(app, ["live", "--input-file", str(tmp_path / "nope.wav")])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: ") and "nope.wav" in result.stderr
    assert "Traceback" not in result.output


def test_no_input_device(fake_model, monkeypatch, tmp_path: Path):
    monkeypatch.setattr(capture, "list_input_devices", lambda: [])
    previous = tmp_path / "yesterday.srt"
    previous.write_text("1\n00:00:00,000 --> 00:00:01,000\nkeep me\n\n")
    result = runner.invoke(app, ["live", "-o", str(previous)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: no audio input device found")
    assert "keep me" in previous.read_text()  # the input failed before the output was opened
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 1 and "no audio input devices found" in result.stderr


class _BrokenPortAudio(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes `import sounddevice` fail the way it does without libportaudio2: OSError."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("PortAudio library not found")


def test_portaudio_missing_is_one_line(fake_model, monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match="install it, e.g. `apt-get install libportaudio2`"):
        capture.import_sounddevice()
    result = runner.invoke(app, ["live"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: PortAudio library not found") and not fake_model  # no model load
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 1 and "libportaudio2" in result.stderr


class FakePortAudioError(Exception):
    pass


class FakeSoundDevice:
    """Just enough of the sounddevice module to drive open_sounddevice_stream's error paths."""

    PortAudioError = FakePortAudioError

    def __init__(self, check_error: str | None = None, open_error: str | None = None) -> None:
        self.check_error = check_error
        self.open_error = open_error

    def check_input_settings(self, **kwargs):
        if self.check_error:
            raise FakePortAudioError(self.check_error)

    def InputStream(self, **kwargs):  # noqa: N802 - mirrors sounddevice's class name
        if self.open_error:
            raise FakePortAudioError(self.open_error)
        raise AssertionError("not reached in these tests")


MIC = capture.InputDevice(2, "USB Mic", "ALSA", 1, 48000.0, True)


@pytest.mark.parametrize(
    ("check_error", "open_error", "expected"),
    [
        ("Invalid sample rate [PaErrorCode -9997]", None, "does not support 22050 Hz"),
        (None, "Error opening InputStream: Device unavailable [PaErrorCode -9985]", "is busy or unavailable"),
        ("Invalid number of channels [PaErrorCode -9998]", None, "does not support 2 channel(s)"),
        (None, "Unanticipated host error [PaErrorCode -9999]", "cannot open input device 2"),
    ],
)
def test_portaudio_open_errors_are_clear(monkeypatch, check_error, open_error, expected):
    fake = FakeSoundDevice(check_error, open_error)
    monkeypatch.setattr(capture, "import_sounddevice", lambda: fake)
    rate = 22050
    with pytest.raises(DeviceError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
        capture.open_sounddevice_stream(MIC, rate, 2, 0, lambda *a: None, lambda: None)
    assert "\n" not in str(info.value)
    assert "USB Mic" in str(info.value)


def test_devices_lists_inputs(monkeypatch):
    monkeypatch.setattr(
        capture,
        "list_input_devices",
        lambda: [capture.InputDevice(0, "pulse", "ALSA", 32, 44100.0, False), MIC],
    )
    result = runner.invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "  0\tpulse\tALSA\t32 ch\t44100 Hz",
        "* 2\tUSB Mic\tALSA\t1 ch\t48000 Hz",
    ]
