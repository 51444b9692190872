"""Device selection with the real onnxruntime: parse, fall back, report the provider really used."""

from __future__ import annotations

import shutil

import onnx
import onnxruntime as ort
import pytest

from streamcli.errors import DeviceError, ModelError
from streamcli.families import create_recognizer
from streamcli.providers import (
    CPU,
    CUDA,
    DeviceSpec,
    create_model_sessions,
    create_session,
    parse_device,
    pick_model_file,
    read_onnx_metadata,
    resolve_threads,
)
from streamcli.recognizer import RecognizerConfig
from streamcli.results import Token
from streamcli.tokens import TokenTable, pieces_to_text, tokens_to_words

ROLES = ["encoder", "decoder", "joiner"]


@pytest.mark.parametrize(
    "text, spec",
    [
        ("auto", DeviceSpec("auto")),
        ("cpu", DeviceSpec("cpu")),
        ("cuda", DeviceSpec("cuda", 0)),
        ("cuda:1", DeviceSpec("cuda", 1)),
        (" CUDA:0 ", DeviceSpec("cuda", 0)),
    ],
)
def test_parse_device(text, spec):
    assert parse_device(text) == spec


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "cpu:0", "auto:1", ""])
def test_parse_device_rejects(text):
    with pytest.raises(ValueError, match="invalid device"):
        parse_device(text)


def test_resolve_threads():
    assert resolve_threads(3) == 3
    assert 1 <= resolve_threads(0) <= 4
    with pytest.raises(ValueError):
        resolve_threads(-1)


def test_cpu_session_reports_cpu(test_zipformer_dir):
    res = create_session(test_zipformer_dir / "joiner.onnx", "cpu", 1)
    assert res.provider == CPU and res.notice is None
    assert res.session.get_providers() == [CPU]


def test_cuda_is_used_or_refused_in_one_line(test_zipformer_dir):
    # Where CUDA really works the session must run on it; elsewhere (this CI: the GPU wheel lists the
    # CUDA provider but its libraries cannot load) --device cuda is a one-line DeviceError.
    try:
        res = create_session(test_zipformer_dir / "joiner.onnx", "cuda", 1)
    except DeviceError as e:
        assert "\n" not in str(e) and "cuda" in str(e).lower()
        assert (
            CUDA
            not in ort.InferenceSession(
                str(test_zipformer_dir / "joiner.onnx"), providers=[CUDA, CPU]
            ).get_providers()[:1]
        )
    else:
        assert res.provider == CUDA and res.session.get_providers()[0] == CUDA


def test_auto_without_a_gpu_is_quietly_cpu(test_zipformer_dir, monkeypatch):
    from streamcli import providers

    monkeypatch.delenv("STREAMCLI_ASSUME_GPU", raising=False)
    monkeypatch.setattr(providers, "nvidia_gpu_present", lambda: False)
    res = create_session(test_zipformer_dir / "joiner.onnx", "auto", 1)
    assert res.provider == CPU and res.notice is None


def test_auto_falls_back_with_a_notice(test_zipformer_dir, monkeypatch):
    monkeypatch.setenv("STREAMCLI_ASSUME_GPU", "1")  # a GPU that is present but unusable
    res = create_session(test_zipformer_dir / "joiner.onnx", "auto", 1)
    assert res.provider == res.session.get_providers()[0]
    if res.provider == CPU:
        assert res.notice and "\n" not in res.notice and "CPU" in res.notice
    else:
        assert res.provider == CUDA and res.notice is None


@pytest.fixture
def two_precisions(test_zipformer_dir, tmp_path):
    """A folder holding fp32 and (same bytes, int8-named) variants of every file."""
    for name in ("encoder", "decoder", "joiner"):
        shutil.copy(test_zipformer_dir / f"{name}.onnx", tmp_path / f"{name}-epoch-99.onnx")
        shutil.copy(test_zipformer_dir / f"{name}.onnx", tmp_path / f"{name}-epoch-99.int8.onnx")
    shutil.copy(test_zipformer_dir / "tokens.txt", tmp_path / "tokens.txt")
    return tmp_path


def test_pick_model_file(two_precisions, tmp_path_factory):
    assert pick_model_file(two_precisions, "encoder", prefer_int8=True).name == "encoder-epoch-99.int8.onnx"
    assert pick_model_file(two_precisions, "encoder", prefer_int8=False).name == "encoder-epoch-99.onnx"
    only = tmp_path_factory.mktemp("only-int8")
    shutil.copy(two_precisions / "joiner-epoch-99.int8.onnx", only / "joiner.int8.onnx")
    assert pick_model_file(only, "joiner", prefer_int8=False).name == "joiner.int8.onnx"
    with pytest.raises(ModelError, match="no decoder"):
        pick_model_file(only, "decoder", prefer_int8=True)
    shutil.copy(two_precisions / "joiner-epoch-99.onnx", only / "joiner-a.onnx")
    shutil.copy(two_precisions / "joiner-epoch-99.onnx", only / "joiner-b.onnx")
    with pytest.raises(ModelError, match="several joiner"):
        pick_model_file(only, "joiner", prefer_int8=False)


def test_cpu_uses_int8_and_auto_fallback_switches_to_int8(two_precisions, monkeypatch):
    monkeypatch.setenv("STREAMCLI_ASSUME_GPU", "1")
    _, files, provider, notice = create_model_sessions(
        two_precisions, ["encoder", "decoder", "joiner"], "cpu", 1
    )
    assert provider == CPU and notice is None
    assert all(p.name.endswith(".int8.onnx") for p in files.values())
    _, files, provider, notice = create_model_sessions(
        two_precisions, ["encoder", "decoder", "joiner"], "auto", 1
    )
    if provider == CPU:  # fell back: CPU prefers the int8 files
        assert notice and all(p.name.endswith(".int8.onnx") for p in files.values())
    else:
        assert all(not p.name.endswith(".int8.onnx") for p in files.values())


def test_recognizer_reports_the_real_provider(two_precisions, monkeypatch):
    monkeypatch.setenv("STREAMCLI_ASSUME_GPU", "1")
    rec = create_recognizer(RecognizerConfig(model=str(two_precisions), device="auto", threads=1))
    assert rec.info.provider == rec.encoder.get_providers()[0]
    assert (rec.info.device_notice is None) == (rec.info.provider == CUDA)
    assert rec.info.files[0] == (
        "encoder-epoch-99.onnx" if rec.info.provider == CUDA else "encoder-epoch-99.int8.onnx"
    )


def test_read_onnx_metadata_matches_onnx(test_zipformer_dir):
    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
        model = onnx.load(str(test_zipformer_dir / name), load_external_data=False)
        assert read_onnx_metadata(test_zipformer_dir / name) == {p.key: p.value for p in model.metadata_props}


def test_token_table_and_words(test_zipformer_dir, tmp_path):
    table = TokenTable.from_file(test_zipformer_dir / "tokens.txt")
    assert table.blank_id == 0 and table[table.unk_id] == "<unk>"
    assert table.text([table.id_of("\u2581THE"), table.id_of("\u2581A"), table.id_of("S")]) == "THE AS"
    assert pieces_to_text(["\u2581HE", "LLO", "<unk>", "\u2581WORLD"]) == "HELLO WORLD"
    toks = [Token("\u2581HE", 0.4, 1), Token("LLO", 0.48, 2), Token("\u2581WORLD", 2.0, 3)]
    words = tokens_to_words(toks, end_s=2.1)
    assert [(w.word, w.start, w.end) for w in words] == [("HELLO", 0.4, 0.8), ("WORLD", 2.0, 2.1)]
    bad = tmp_path / "tokens.txt"
    bad.write_text("<blk> 0\na 2\n")
    with pytest.raises(ModelError, match="gaps"):
        TokenTable.from_file(bad)
