"""Model registry: cache dir, download + verify from a local HTTP server, corruption, --model resolution."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from local_http_server import Server

from streamcli import registry
from streamcli.errors import ModelError
from streamcli.registry import KnownModel, ModelFile


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(path))
    monkeypatch.delenv("STREAMCLI_MODELS_BASE_URL", raising=False)
    return path


CONTENT = {
    "encoder-x.int8.onnx": b"int8 encoder bytes " * 500,
    "encoder-x.onnx": b"fp32 encoder bytes " * 900,
    "decoder-x.onnx": b"decoder" * 100,
    "tokens.txt": "<blk> 0\n▁THE 1\n".encode(),
}


def fake_model(base_url: str, content: dict[str, bytes] = CONTENT) -> KnownModel:
    precision = {"encoder-x.int8.onnx": "int8", "encoder-x.onnx": "fp32"}
    return KnownModel(
        name="fake-zipformer",
        family="zipformer-transducer",
        description="test",
        license="none",
        base_url=base_url,
        aliases=("fake",),
        files=tuple(
            ModelFile(n, hashlib.sha256(b).hexdigest(), len(b), precision.get(n, "any"))
            for n, b in content.items()
        ),
    )


def test_cache_dir_follows_xdg_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMCLI_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "streamcli" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.cache_dir() == tmp_path / "home" / ".cache" / "streamcli" / "models"
    monkeypatch.setenv("STREAMCLI_MODELS_DIR", str(tmp_path / "mine"))
    assert registry.cache_dir() == tmp_path / "mine"


def test_known_models_carry_the_published_checksums():
    small = registry.find_known("zipformer-en-20m")
    assert small is registry.KNOWN_MODELS["sherpa-onnx-streaming-zipformer-en-20M-2023-02-17"]
    names = {f.name: f for f in small.files}
    assert names["encoder-epoch-99-avg-1.int8.onnx"].size_bytes == 42845182
    assert names["tokens.txt"].sha256.startswith("49e3c264")
    big = registry.find_known("sherpa-onnx-streaming-zipformer-en-2023-06-26")
    assert {f.precision for f in big.files} == {"int8", "fp32", "any"}
    assert [f.name for f in big.files_for("int8")] == [
        "encoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
        "decoder-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
        "joiner-epoch-99-avg-1-chunk-16-left-128.int8.onnx",
        "tokens.txt",
    ]
    # one-precision models serve every request
    assert small.files_for("fp32") == small.files
    for model in registry.KNOWN_MODELS.values():
        for f in model.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.size_bytes > 0
        assert model.url(model.files[0]).startswith(("https://huggingface.co/csukuangfj/",
                                                      "https://huggingface.co/Systran/"))
    whisper = registry.find_known("whisper-tiny.en")
    from streamcli.whisper.weights import TINY_EN_CT2_BYTES, TINY_EN_CT2_SHA256

    assert whisper is not None and (whisper.files[0].sha256, whisper.files[0].size_bytes) == (
        TINY_EN_CT2_SHA256, TINY_EN_CT2_BYTES)


def test_download_verifies_and_reports_progress(cache):
    with Server(CONTENT) as server:
        model = fake_model(server.url)
        seen: dict[str, int] = {}
        folder = registry.download_model(model, progress=lambda n, done, total: seen.__setitem__(n, done))
        assert folder == cache / "fake-zipformer"
        for name, body in CONTENT.items():
            assert (folder / name).read_bytes() == body
            assert seen[name] == len(body)
        marker = json.loads((folder / registry.MARKER_NAME).read_text())
        assert set(marker) == set(CONTENT)
        assert not list(folder.glob("*.part"))
        # a second download finds everything verified and fetches nothing
        count = len(server.requests)
        registry.download_model(model)
        assert len(server.requests) == count


def test_download_one_precision(cache):
    with Server(CONTENT) as server:
        folder = registry.download_model(fake_model(server.url), precision="int8")
        assert sorted(server.requests) == ["decoder-x.onnx", "encoder-x.int8.onnx", "tokens.txt"]
    assert not (folder / "encoder-x.onnx").exists()


def test_corrupt_download_is_rejected_and_not_kept(cache):
    served = dict(CONTENT)
    served["decoder-x.onnx"] = b"DECODER" + CONTENT["decoder-x.onnx"][7:]  # same size, other bytes
    with Server(served) as server, pytest.raises(ModelError, match="failed verification.*sha256"):
        registry.download_model(fake_model(server.url))
    folder = cache / "fake-zipformer"
    assert not (folder / "decoder-x.onnx").exists()
    assert not list(folder.glob("*.part"))


def test_wrong_size_download_is_rejected(cache):
    served = dict(CONTENT)
    served["tokens.txt"] = CONTENT["tokens.txt"] + b"extra"
    with Server(served) as server, pytest.raises(ModelError, match="bytes, expected"):
        registry.download_model(fake_model(server.url))


def test_no_network_says_which_files_go_where(cache):
    # A closed port on 127.0.0.1: connection refused, like having no network.
    with Server({}) as server:
        url = server.url
    model = fake_model(url)
    with pytest.raises(ModelError) as err:
        registry.download_model(model, timeout_s=2)
    message = str(err.value)
    assert "\n" not in message
    assert "by hand" in message and str(cache / "fake-zipformer") in message
    for name in CONTENT:
        assert name in message


def test_http_404_is_a_clear_error(cache):
    with (
        Server({"tokens.txt": CONTENT["tokens.txt"]}) as server,
        pytest.raises(ModelError, match="Not Found"),
    ):
        registry.download_model(fake_model(server.url))


def test_mirror_base_url_from_environment(cache, monkeypatch):
    with Server(CONTENT) as server:
        monkeypatch.setenv("STREAMCLI_MODELS_BASE_URL", server.url)
        registry.download_model(fake_model("http://127.0.0.1:9/unused"))
        assert len(server.requests) == len(CONTENT)


def test_resolve_by_name_verifies_and_catches_tampering(cache, monkeypatch):
    with Server(CONTENT) as server:
        model = fake_model(server.url)
        monkeypatch.setitem(registry.KNOWN_MODELS, model.name, model)
        with pytest.raises(ModelError, match="not downloaded.*streamcli models download fake-zipformer"):
            registry.resolve_model("fake")
        folder = registry.download_model(model)
    assert registry.resolve_model("fake") == folder
    assert registry.resolve_model("fake-zipformer") == folder
    # a file changed after download is re-hashed and refused
    decoder = folder / "decoder-x.onnx"
    decoder.write_bytes(b"X" * len(CONTENT["decoder-x.onnx"]))
    with pytest.raises(ModelError, match="sha256.*does not match"):
        registry.resolve_model("fake")
    decoder.unlink()
    with pytest.raises(ModelError, match="incomplete: decoder-x.onnx missing"):
        registry.resolve_model("fake")


def test_files_put_there_by_hand_are_verified_once(cache, monkeypatch):
    model = fake_model("http://127.0.0.1:9/offline")
    monkeypatch.setitem(registry.KNOWN_MODELS, model.name, model)
    folder = cache / model.name
    folder.mkdir(parents=True)
    for name, body in CONTENT.items():
        if name != "encoder-x.onnx":  # int8 only, as a CPU user would copy
            (folder / name).write_bytes(body)
    assert registry.resolve_model("fake") == folder
    assert set(json.loads((folder / registry.MARKER_NAME).read_text())) == {
        "encoder-x.int8.onnx",
        "decoder-x.onnx",
        "tokens.txt",
    }
    # download_model keeps hand-placed files that verify and only fetches what is missing
    with Server(CONTENT) as server:
        registry.download_model(model, base_url=server.url)
        assert server.requests == ["encoder-x.onnx"]


def test_resolve_paths_and_unknown_names(tmp_path, cache):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokens.txt").write_text("<blk> 0\n")
    (folder / "encoder.onnx").write_bytes(b"x")
    assert registry.resolve_model(str(folder)) == folder
    with pytest.raises(ModelError, match="no such model folder"):
        registry.resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelError, match="not a model folder"):
        registry.resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="is a file"):
        registry.resolve_model(str(folder / "tokens.txt"))
    with pytest.raises(ModelError, match="unknown model 'whisper-large'.*sherpa-onnx-streaming"):
        registry.resolve_model("whisper-large")


def test_default_model_is_the_shipped_folder(tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    with pytest.raises(ModelError, match="no default model.*--model"):
        registry.default_model_dir([base])
    (base / "README-only").mkdir()
    shipped = base / "wctc-small"
    shipped.mkdir()
    (shipped / "encoder.onnx").write_bytes(b"x")
    (shipped / "tokens.txt").write_text("<blk> 0\n")
    assert registry.default_model_dir([tmp_path / "absent", base]) == shipped


def test_human_bytes():
    assert registry.human_bytes(5048) == "5.0 KB"
    assert registry.human_bytes(260642850) == "260.6 MB"
    assert registry.human_bytes(12) == "12 B"
