"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing page in the nav, or an
API reference entry that no longer exists fails here (and in CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")


def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    reference = (tmp_path / "site" / "reference" / "methods" / "index.html").read_text()
    assert "Paper defaults" in reference and "ssl_lightning.methods.simclr" in reference  # docstrings rendered
    # the figures are drawn from the recorded runs in docs/runs/ while the site builds (docs/hooks/figures.py),
    # every one a page shows is there, and none is written into the repository
    import matplotlib.image

    figure = re.compile(r"\(((?:\.\./)*assets/figures/[^)]+\.png)\)")
    shown = {m for page in (ROOT / "docs").rglob("*.md") for m in figure.findall(page.read_text())}
    assert len(shown) >= 5, shown
    for src in shown:
        png = tmp_path / "site" / src.lstrip("./")
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 200 and width > 400, src
    assert not (ROOT / "docs" / "assets" / "figures").exists() and not list((ROOT / "docs" / "runs").rglob("*.png"))


def test_readme_and_docs_stay_inside_the_repository():
    """No page points at folders a fresh clone does not have (such as a workspace's ../shared)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert not re.search(r"\.\./shared|/work/", text), page


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 260
