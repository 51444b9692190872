"""Shared fixtures. ``test_zipformer_dir``: the random-weight zipformer built once per test session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from paths import SHARED  # noqa: F401 (re-exported for fixtures)

REPO = Path(__file__).resolve().parent.parent


def _load_maker():
    spec = importlib.util.spec_from_file_location(
        "make_test_zipformer", REPO / "scripts" / "make_test_zipformer.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def test_zipformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt (sherpa-onnx zipformer v1 layout)."""
    out = tmp_path_factory.mktemp("test-zipformer")
    return _load_maker().make_test_zipformer(out, seed=0)
