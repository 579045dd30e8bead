"""Resume is exact: k epochs, stop, resume to 2k == 2k uninterrupted (online, teacher, optimizer, LR, step)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from ssl_lightning.train import train


class StopAfterEpoch(Callback):
    """Interrupts a run at the end of an epoch, as a preemption would: the schedules still span the full
    run (max_epochs), unlike a shorter run, whose LR and EMA schedules would be compressed."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            trainer.should_stop = True

HEADS = ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.pred_hidden_dim=64"]
COMMON = ["method=byol", *HEADS, "data.num_samples=48", "data.batch_size=16", "trainer.check_val_every_n_epoch=1",
          "callbacks.knn.k=10", "~callbacks.view_grid", "method.scheduler.warmup_epochs=1", "method.base_tau=0.9"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    from tests.conftest import compose_config

    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_config(full_dir, *COMMON, "trainer.max_epochs=4"))
    stop = "+callbacks.stop={_target_: tests.test_resume.StopAfterEpoch, epoch: 2}"
    train(compose_config(first_dir, *COMMON, "trainer.max_epochs=4", stop))
    train(compose_config(resumed_dir, *COMMON, "trainer.max_epochs=4", f"resume={first_dir}"))

    full, resumed = load(full_dir / "checkpoints" / "last.ckpt"), load(resumed_dir / "checkpoints" / "last.ckpt")
    half = load(first_dir / "checkpoints" / "last.ckpt")
    assert full["global_step"] == resumed["global_step"] == 2 * half["global_step"] == 12
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert any(k.startswith("teacher_backbone.") for k in full["state_dict"])
    # the teacher really moved away from its initialisation and differs from the online network
    assert not torch.equal(full["state_dict"]["teacher_backbone.conv1.weight"], half["state_dict"]["teacher_backbone.conv1.weight"])
    assert not torch.equal(full["state_dict"]["teacher_backbone.conv1.weight"], full["state_dict"]["backbone.conv1.weight"])
    # optimizer momentum buffers and the LR schedule position
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], rtol=0, atol=0)
    assert full["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"] == 12


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path):
    from tests.conftest import compose_config

    metrics = train(compose_config(tmp_path, *COMMON, "trainer.max_epochs=1", "resume=auto"))
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "train/loss" in metrics
