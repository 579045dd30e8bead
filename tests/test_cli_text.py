"""The language methods from the command line: a Hydra multirun writes one run dir per value and returns
val/loss as the sweep objective."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import text_overrides, write_tiny_corpus


def test_clm_sweep_from_the_command_line(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "tiny.txt")
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning.train", "-m", *text_overrides(corpus, "clm"),
         "method.optimizer.lr=1e-3,3e-3", "trainer.max_steps=4", "trainer.enable_progress_bar=false",
         "trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=4", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    lrs = []
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        lrs.append(config["method"]["optimizer"]["lr"])
        assert config["objective"] == "val/loss" and config["backbone"]["vocab_size"] == 25
        assert (run / "checkpoints" / "last.ckpt").exists() and (run / "tokenizer.json").exists()
    assert lrs == [1e-3, 3e-3]
