"""MkDocs hook: draws the documentation's figures from the recorded runs in ``docs/runs/`` with
``ssl_lightning.plot`` while the site builds, and serves them as ``assets/figures/<set>/<figure>.png``.

The runs are real training runs, recorded by ``bash docs/runs/record.sh`` (their overrides, final metrics and
CSV-logged scalars are small text files kept in git); the PNGs are made here, never written into the repository.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mkdocs.structure.files import File, Files

from ssl_lightning.plot import plot

# figure set -> (run or sweep directories under docs/runs, the runs' labels in order)
FIGURES: dict[str, tuple[list[str], list[str] | None]] = {
    "default": (["default"], ["python -m ssl_lightning.train (SimCLR)"]),
    "digits": (["default", "vicreg_digits", "dino_digits"],
               ["SimCLR (default run)", "VICReg (vicreg_digits)", "DINO (dino_digits)"]),
    "vit_digits": (["dino_digits", "ibot_digits", "ijepa_digits"],
                   ["DINO (dino_digits)", "iBOT (ibot_digits)", "I-JEPA (ijepa_digits)"]),
    "moco_temperature": (["moco_temperature"], None),
}

_made: list[Path] = []


def on_files(files: Files, config) -> Files:
    # relative, so that a sweep figure's title names docs/runs/..., not this machine's path
    runs = Path(os.path.relpath(Path(config["docs_dir"]) / "runs"))
    scratch = Path(tempfile.mkdtemp(prefix="ssl_lightning_figures_"))
    _made.append(scratch)
    for name, (paths, labels) in FIGURES.items():
        for png in plot([runs / p for p in paths], out=scratch / name, labels=labels):
            files.append(File.generated(config, f"assets/figures/{name}/{png.name}", abs_src_path=str(png)))
    return files


def on_post_build(config) -> None:
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


def on_build_error(error) -> None:
    on_post_build(None)
