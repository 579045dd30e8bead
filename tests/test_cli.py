"""The command line as users type it: a Hydra multirun writes one complete run dir per value."""

from __future__ import annotations

import subprocess
import sys

import yaml


def test_multirun_sweep_writes_one_run_dir_per_value(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning.train", "-m", "method.temperature=0.1,0.5", "data=synthetic",
         "data.num_samples=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "method.proj_hidden_dim=32", "method.proj_output_dim=16", "~callbacks.knn", "~callbacks.view_grid",
         f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    temperatures = []
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        temperatures.append(config["method"]["temperature"])
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert list((run / "tensorboard").glob("events.out.tfevents*"))
    assert temperatures == [0.1, 0.5]
