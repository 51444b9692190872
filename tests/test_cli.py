"""`streamcli transcribe` and `streamcli models` through typer's CliRunner on small fixtures."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from local_http_server import Server
from paths import SHARED
from rich.console import Console
from typer.testing import CliRunner

from streamcli import cli, registry
from streamcli.cli import common as cli_common
from streamcli.cli import transcribe as cli_transcribe
from streamcli.formats import timestamp
from streamcli.registry import KnownModel, ModelFile

DEV = SHARED / "data" / "dev"
FLAC_16K = DEV / "librispeech/test-other/1688/1688-142285-0002.flac"
FLAC_16K_B = DEV / "librispeech/test-other/1688/1688-142285-0003.flac"
WAV_22K = DEV / "ljspeech/LJ001-0008.wav"

runner = CliRunner()


@pytest.fixture(scope="module")
def model(test_zipformer_dir) -> list[str]:
    return ["--model", str(test_zipformer_dir), "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def reuse_recognizers(monkeypatch):
    """Loading the test model costs ~1 s; CLI invocations with the same options share one."""
    load = cli_common.load_recognizer

    def cached(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in _RECOGNIZERS:
            _RECOGNIZERS[key] = load(*args, **kwargs)
        return _RECOGNIZERS[key]

    monkeypatch.setattr(cli_transcribe, "load_recognizer", cached)


_RECOGNIZERS: dict[str, object] = {}


def run(*args: str, input: bytes | None = None):
    return runner.invoke(cli.app, [str(a) for a in args], input=input)


def assert_one_line_error(result, *fragments: str, code: int | None = None) -> str:
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors, result.output
    joined = "\n".join(errors)
    for fragment in fragments:
        assert fragment in joined, joined
    return joined


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    paths = {}
    paths["missing"] = tmp_path / "missing.wav"
    paths["directory"] = tmp_path / "adir"
    paths["directory"].mkdir()
    paths["empty"] = tmp_path / "empty.wav"
    paths["empty"].write_bytes(b"")
    paths["notaudio"] = tmp_path / "notes.wav"
    paths["notaudio"].write_text("not audio at all\n" * 50)
    full = tmp_path / "full.wav"
    x, rate = sf.read(FLAC_16K, dtype="float32")
    sf.write(full, x, rate, subtype="PCM_16")
    paths["truncated"] = tmp_path / "truncated.wav"
    paths["truncated"].write_bytes(full.read_bytes()[:30000])
    nan = x.copy()
    nan[8000] = np.nan
    paths["nan"] = tmp_path / "nan.wav"
    sf.write(paths["nan"], nan, rate, subtype="FLOAT")
    return paths


EXPECTED_ERRORS = {
    "missing": "no such file",
    "directory": "is a directory",
    "empty": "empty file",
    "notaudio": "not a readable audio file",
    "truncated": "truncated",
    "nan": "NaN or Inf",
}


def test_plain_lines_on_a_pipe(model):
    result = run("transcribe", FLAC_16K, *model)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert "[" not in result.stdout and "RTF" not in result.stdout  # no live view, no footer


@pytest.mark.parametrize("case", list(EXPECTED_ERRORS))
def test_each_bad_input_is_one_line_and_non_zero(model, bad_inputs, case):
    result = run("transcribe", bad_inputs[case], *model)
    message = assert_one_line_error(result, EXPECTED_ERRORS[case], str(bad_inputs[case]), code=1)
    assert len(message.splitlines()) == 2  # the file's error + "1 of 1 inputs failed"


def test_debug_shows_the_traceback(model, bad_inputs):
    result = run("transcribe", bad_inputs["truncated"], *model, "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "AudioError" in result.stderr
    result = run("--debug", "transcribe", bad_inputs["notaudio"], *model)
    assert "Traceback" in result.stderr


def test_zero_length_audio_is_an_empty_transcript(model, tmp_path):
    empty = tmp_path / "zero.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    result = run("transcribe", empty, *model, "-o", tmp_path / "zero.json")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "zero.json").read_text())
    assert doc == {"file": str(empty), "text": "", "segments": [], "words": [], "tokens": []}


def test_json_output_schema_and_invariants(model, tmp_path):
    out = tmp_path / "out.json"
    result = run("transcribe", FLAC_16K, *model, "-o", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["file"] == str(FLAC_16K)
    assert doc["text"] == " ".join(s["text"] for s in doc["segments"])
    assert doc["segments"] and doc["words"] and doc["tokens"]
    duration = sf.info(FLAC_16K).duration
    ends = 0.0
    for seg in doc["segments"]:
        assert set(seg) == {"start", "end", "text"}
        assert ends - 1e-6 <= seg["start"] <= seg["end"] <= duration + 0.05
        ends = seg["end"]
        inside = [w for w in doc["words"] if seg["start"] <= w["start"] <= seg["end"]]
        assert " ".join(w["word"] for w in inside) == seg["text"]
    for w in doc["words"]:
        assert set(w) == {"word", "start", "end"} and w["start"] <= w["end"]
    starts = [t["start"] for t in doc["tokens"]]
    assert starts == sorted(starts)
    assert all(set(t) == {"token", "start"} and isinstance(t["token"], str) for t in doc["tokens"])


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_are_well_formed(model, tmp_path, fmt):
    out = tmp_path / f"sub.{fmt}"  # format from the extension
    result = run("transcribe", WAV_22K, *model, "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    sep = "," if fmt == "srt" else r"\."
    stamps = re.findall(rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d) --> (\d\d):(\d\d):(\d\d){sep}(\d\d\d)", text)
    assert stamps
    for s in stamps:
        start = int(s[0]) * 3600 + int(s[1]) * 60 + int(s[2]) + int(s[3]) / 1000
        end = int(s[4]) * 3600 + int(s[5]) * 60 + int(s[6]) + int(s[7]) / 1000
        assert start < end <= sf.info(WAV_22K).duration + 0.05
    if fmt == "vtt":
        assert text.startswith("WEBVTT")
    else:
        assert text.startswith("1\n")


def test_document_formats_go_to_stdout_without_o(model):
    result = run("transcribe", FLAC_16K, *model, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["file"] == str(FLAC_16K)
    result = run("transcribe", FLAC_16K, FLAC_16K_B, *model, "--format", "json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines for several inputs
    assert [d["file"] for d in docs] == [str(FLAC_16K), str(FLAC_16K_B)]
    result = run("transcribe", FLAC_16K, FLAC_16K_B, *model, "--format", "vtt")
    parts = re.split(r"^==> (.+) <==\n", result.stdout, flags=re.MULTILINE)
    assert parts[0] == "" and parts[1::2] == [str(FLAC_16K), str(FLAC_16K_B)]
    assert all(doc.startswith("WEBVTT\n") and doc.endswith("\n\n") for doc in parts[2::2])


def test_several_inputs_one_bad_others_written_exit_non_zero(model, bad_inputs, tmp_path):
    out_dir = tmp_path / "out"
    result = run(
        "transcribe", FLAC_16K, bad_inputs["truncated"], FLAC_16K_B, *model, "-o", out_dir, "--format", "srt"
    )
    assert result.exit_code == 1
    assert_one_line_error(result, "truncated.wav: truncated", "1 of 3 inputs failed")
    assert sorted(p.name for p in out_dir.iterdir()) == ["1688-142285-0002.srt", "1688-142285-0003.srt"]
    for p in out_dir.iterdir():
        assert p.read_text().startswith("1\n")


def test_globs_lists_and_same_stems(model, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    x, rate = sf.read(FLAC_16K, dtype="float32")
    sf.write(a / "x.wav", x, rate)
    sf.write(b / "x.wav", x, rate)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{FLAC_16K_B}\n\n")
    out = tmp_path / "out"
    result = run("transcribe", str(tmp_path / "*" / "x.wav"), "--files-from", listing, *model, "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["1688-142285-0003.txt", "x-2.txt", "x.txt"]
    assert (out / "x.txt").read_text() == (out / "x-2.txt").read_text() != ""
    result = run("transcribe", str(tmp_path / "nothing*.wav"), *model)
    assert_one_line_error(result, "nothing*.wav: no such file", code=1)


def test_failed_input_never_clobbers_an_existing_output(model, bad_inputs, tmp_path):
    out = tmp_path / "keep.txt"
    out.write_text("finished earlier\n")
    result = run("transcribe", bad_inputs["truncated"], *model, "-o", out)
    assert result.exit_code == 1
    assert out.read_text() == "finished earlier\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")] == []


def test_stdin_wav(model):
    x, rate = sf.read(WAV_22K, dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    piped = run("transcribe", "-", *model, input=buf.getvalue())
    direct = run("transcribe", WAV_22K, *model)
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == direct.stdout and piped.stdout.strip()
    flac = run("transcribe", "-", *model, input=FLAC_16K.read_bytes())
    assert_one_line_error(flac, "-: not WAV data (only WAV can be read from stdin)")
    nothing = run("transcribe", "-", *model, input=b"")
    assert_one_line_error(nothing, "empty input")


def test_bad_options_are_one_line(model, test_zipformer_dir, tmp_path):
    r = run("transcribe", FLAC_16K, "--model", str(test_zipformer_dir), "--device", "tpu")
    assert_one_line_error(r, "invalid device 'tpu'", code=2)
    r = run("transcribe", FLAC_16K, *model, "--format", "docx")
    assert_one_line_error(r, "--format must be one of txt, json, srt, vtt", code=2)
    r = run("transcribe", FLAC_16K, "--model", str(tmp_path / "nope"))
    assert_one_line_error(r, "no such model folder", code=1)
    r = run("transcribe", FLAC_16K, "--model", "no-such-model")
    assert_one_line_error(r, "unknown model 'no-such-model'", code=2)
    file_out = tmp_path / "file.txt"
    file_out.write_text("x")
    r = run("transcribe", FLAC_16K, FLAC_16K_B, *model, "-o", file_out)
    assert_one_line_error(r, "-o names a folder", code=2)
    r = run("transcribe", *model)
    assert_one_line_error(r, "no input files", code=2)
    r = run("transcribe", FLAC_16K, *model, "-o", tmp_path / "no" / "such" / "dir.txt")
    assert_one_line_error(r, "does not exist", code=2)


def test_beam_search_option(model):
    result = run("transcribe", FLAC_16K, *model, "--beam", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"]


def test_terminal_live_view(model, monkeypatch):
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200, highlight=False, color_system=None)
    monkeypatch.setattr(cli_transcribe, "console", terminal)
    result = run("transcribe", FLAC_16K, *model)
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert re.search(r"\[00:0\d\.\d\d → 00:0\d\.\d\d\] \S", shown)
    footer = re.search(
        r"2\.8/2\.8 s · [\d.]+ s elapsed · RTF [\d.]+ · window p50/p95 [\d.]+/[\d.]+ ms · CPU",
        shown,
    )
    assert footer, shown
    assert max(len(line) for line in footer.group(0).splitlines()) <= 80  # fits a narrow terminal


def test_clock_and_footer_helpers():
    def clock(seconds: float) -> str:
        return timestamp(seconds, digits=2, always_hours=False)

    assert clock(0) == "00:00.00"
    assert clock(75.456) == "01:15.46"
    assert clock(3725.0) == "1:02:05.00"


# ---------------------------------------------------------------------------------------------------
# models


def test_models_list(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path))
    result = run("models", "list")
    assert result.exit_code == 0
    for name in registry.KNOWN_MODELS:
        assert name[:20] in result.stdout


def test_models_download_from_a_local_server_and_info(tmp_path, monkeypatch):
    content = {"encoder.onnx": b"e" * 3000, "tokens.txt": b"<blk> 0\n"}
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path / "cache"))
    with Server(content) as server:
        fake = KnownModel(
            "fake-model",
            "zipformer-transducer",
            "test",
            "none",
            server.url,
            tuple(ModelFile(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in content.items()),
        )
        monkeypatch.setitem(registry.KNOWN_MODELS, fake.name, fake)
        result = run("models", "download", "fake-model")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "cache" / "fake-model" / "encoder.onnx").read_bytes() == content["encoder.onnx"]
        assert "verified" in result.stdout
    # the server is gone: downloading a missing file is one line naming where files go
    (tmp_path / "cache" / "fake-model" / "encoder.onnx").unlink()
    result = run("models", "download", "fake-model")
    assert_one_line_error(result, "by hand", str(tmp_path / "cache" / "fake-model"))
    result = run("models", "info", "fake-model")
    assert result.exit_code == 0
    assert hashlib.sha256(content["encoder.onnx"]).hexdigest() in result.stdout
    result = run("models", "download", "nope")
    assert_one_line_error(result, "unknown model 'nope'")


def test_models_info_of_a_folder(test_zipformer_dir):
    result = run("models", "info", test_zipformer_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "zipformer-transducer",
        "CPUExecutionProvider",
        "chunk_frames",
        "39",
        "32",
        "model_type",
    ):
        assert expected in out
    assert "cached_len_0" in out and "decode_chunk_len" in out


def test_window_and_overlap_options_reach_the_windowed_model():
    """The shipped windowed model runs at a requested W/O; a W/O it cannot use is one line, exit 2."""
    # First pass only: the finals come from Whisper, which does not depend on W/O.
    common = ["--device", "cpu", "--threads", "1", "--format", "json", "--no-rescore"]
    default = run("transcribe", FLAC_16K, *common)
    wide = run("transcribe", FLAC_16K, *common, "--window", "200", "--overlap", "50")
    assert default.exit_code == 0 and wide.exit_code == 0, (default.output, wide.output)
    default_doc, wide_doc = json.loads(default.stdout), json.loads(wide.stdout)
    assert wide_doc["text"], "the 200/50 window decoded nothing"
    # A different window changes what the encoder sees, so token times or text differ somewhere.
    assert default_doc["tokens"] != wide_doc["tokens"]
    r = run("transcribe", FLAC_16K, *common, "--window", "203", "--overlap", "50")
    assert_one_line_error(r, "multiple of 2", code=2)
    r = run("transcribe", FLAC_16K, *common, "--window", "100", "--overlap", "100")
    assert_one_line_error(r, "overlap", code=2)


def test_window_option_is_refused_for_a_fixed_chunk_model(model):
    r = run("transcribe", FLAC_16K, *model, "--window", "200", "--overlap", "50")
    assert_one_line_error(r, "chunk is fixed at export", code=2)
