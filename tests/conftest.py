"""Shared fixtures. ``test_zipformer_dir``: the random-weight zipformer built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import SHARED  # noqa: F401 (re-exported for fixtures)


@pytest.fixture(scope="session")
def test_zipformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt (sherpa-onnx zipformer v1 layout)."""
    from streamcli_tools.devtools.zipformer_maker import make_test_zipformer

    return make_test_zipformer(tmp_path_factory.mktemp("test-zipformer"), seed=0)
