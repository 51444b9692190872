"""Where the tests find the repository and the shared data (`../shared` beside the checkout).

`STREAMCLI_SHARED_DIR` points elsewhere, e.g. when the checkout lives outside its usual parent folder.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STREAMCLI_SHARED_DIR", REPO.parent / "shared"))
DEV = SHARED / "data" / "dev"
DEV_TSV = DEV / "dev.tsv"
TEST_WAVS = SHARED / "models" / "sherpa-onnx-streaming-zipformer-en-2023-06-26-TESTDATA-ONLY" / "test_wavs"
