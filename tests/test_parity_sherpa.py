"""streamcli and the sherpa-onnx runtime decode the test zipformer identically on real speech.

Both runtimes get the same 16 kHz float samples (decoded and resampled once) and the same tail
padding, so the comparison covers features, chunking, encoder states, search and timestamps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import SHARED

REPO = Path(__file__).resolve().parent.parent

from streamcli_tools.devtools.sherpa_parity import compare, dev_files  # noqa: E402

pytest.importorskip("sherpa_onnx")
pytestmark = pytest.mark.skipif(
    not (SHARED / "data" / "dev" / "dev.tsv").is_file(), reason="needs ../shared/data/dev (real speech)"
)


def _diffs(report: dict) -> list[str]:
    return [
        f"{Path(f['file']).name}: {f['first_difference']}" for f in report["per_file"] if not f["identical"]
    ]


@pytest.mark.slow
def test_greedy_parity_on_every_dev_file(test_zipformer_dir):
    files = dev_files()
    assert len(files) >= 170 and any(p.name == "8k.wav" for p in files)
    report = compare(test_zipformer_dir, files, threads=1, concurrent=True)
    assert report["identical_files"] == report["files"], _diffs(report)[:5]
    # the random model still says something on speech: at least one token per second on average
    assert report["tokens_per_s"] >= 1.0
    assert all(f["tokens"] > 0 for f in report["per_file"])


def test_modified_beam_search_parity(test_zipformer_dir):
    files = dev_files()[:6] + [p for p in dev_files() if p.name == "8k.wav"]
    report = compare(test_zipformer_dir, files, threads=1, decoding="beam", beam=4, concurrent=True)
    assert report["identical_files"] == report["files"], _diffs(report)[:5]
    assert report["tokens"] > 20
