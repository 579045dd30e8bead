"""``python -m ssl_lightning.eval`` on 2 gloo devices under ``-m``: each job's second rank runs that job only
(not the whole sweep again), and the next job launches its own ranks (the previous job's process group and
launcher environment are torn down)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_lightning.backbones.resnet import resnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~26 s: two 2-rank eval jobs
def test_eval_two_devices_multirun_one_dir_per_job(tmp_path):
    torch.manual_seed(0)
    torch.save(resnet("resnet18", cifar_stem=True).state_dict(), tmp_path / "backbone.pt")
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "-m", "ssl_lightning.eval", "-m", f"ckpt={tmp_path / 'backbone.pt'}", "backbone=resnet18",
               "data=synthetic", "data.image_size=8", "data.num_samples=32",
               "fabric.accelerator=cpu", "fabric.devices=2", "protocol=knn", "protocol.k=5,10",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output = proc.communicate(timeout=300)[0]
    except subprocess.TimeoutExpired:  # e.g. the second job waiting for a rank that was never launched
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the sweep did not finish:\n{proc.communicate()[0][-3000:]}") from None
    assert proc.returncode == 0, output[-3000:]
    assert list(work.iterdir()) == []  # no second (timestamped) sweep or run dir from a child rank
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job, k in (("0", 5), ("1", 10)):
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["config"]["protocol"]["k"] == k
        assert results["val_images"] == 32  # both ranks' shards of the validation split
        assert [p.name for p in (sweep / job).rglob(".hydra")] == [".hydra"]
        assert len(list((sweep / job).rglob("events.out.tfevents*"))) == 1
    assert output.count("| knn ") == 2  # one table per job, printed by rank 0 only
