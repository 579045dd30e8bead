"""SIGTERM mid-epoch, then resume=auto: the final weights equal an uninterrupted run's, bit for bit,
online network and EMA teacher included, with loader workers (which draw their indices as soon as the
loader's iterator exists) and across an epoch boundary after the resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from ssl_lightning.train import train
from tests.conftest import TINY, compose_config

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["method=byol", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32",
          "method.base_tau=0.9", "data.num_samples=64", "data.batch_size=8", "trainer.max_epochs=2",
          "data.num_workers=2", "data.image_size=8",
          "~callbacks.knn", "~callbacks.view_grid"]


class SlowAfterStep(Callback):
    """Test aid: from a given step on, announce progress through a marker file and slow down, so that the
    test's SIGTERM lands in the middle of an epoch."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            self.marker.write_text(str(trainer.global_step))
            time.sleep(0.5)


def run_cli(*overrides: str, **popen):
    cmd = [sys.executable, "-m", "ssl_lightning.train", *TINY, *COMMON, *overrides]
    # the same number of threads as this process, whose in-process run is the reference: float sums in a
    # convolution depend on how the work is split, so a bit-exact comparison needs the same split
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_sigterm_mid_epoch_then_resume_auto_equals_uninterrupted(tmp_path):
    train(compose_config(tmp_path / "full", *COMMON))
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)

    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    slow = f"+callbacks.slow={{_target_: tests.test_preemption.SlowAfterStep, step: 3, marker: '{marker}'}}"
    proc = run_cli(slow, f"hydra.run.dir={run_dir}")
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "training never reached step 3"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    assert "Preempted at step" in output

    interrupted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = 64 // 8
    assert 0 < interrupted["global_step"] % steps_per_epoch, "the interruption should fall inside an epoch"
    assert (run_dir / "checkpoints" / "last.ckpt").resolve().name.startswith("preempted-")

    resumed = run_cli("resume=auto", f"hydra.run.dir={run_dir}")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == full["global_step"] == 2 * steps_per_epoch
    assert any(k.startswith("teacher_backbone.") for k in full["state_dict"])
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=0, msg=key)
