"""The documentation site builds in MkDocs' strict mode (a broken link or a page left out of the nav fails),
and the README's links point at files that exist."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from paths import REPO

pytest.importorskip("mkdocs")


def test_the_docs_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("cli", "library", "models", "server", "ray", "benchmarks", "development"):
        assert (tmp_path / "site" / page / "index.html").is_file()


def test_readme_links_resolve_and_it_stays_an_entry_point():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing
    assert len(text.splitlines()) <= 200
