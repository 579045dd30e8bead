"""A NaN loss at a given step: stop (naming the step and the last good checkpoint) or skip the step."""

from __future__ import annotations

import pytest
import torch

import ssl_lightning.methods.byol as byol_module
from ssl_lightning.callbacks import NonFiniteLoss, NonFiniteLossError
from ssl_lightning.train import train

HEADS = ["method=byol", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32",
         "data.num_samples=48", "data.batch_size=16", "~callbacks.knn", "~callbacks.view_grid"]


@pytest.fixture
def nan_at_call(monkeypatch):
    """Make the BYOL loss NaN on the n-th call (0-based); BYOL calls the loss twice per step."""

    def install(n: int):
        calls = {"count": 0}
        real = byol_module.byol_loss

        def poisoned(p, z):
            out = real(p, z)
            calls["count"] += 1
            return out * float("nan") if calls["count"] - 1 == n else out

        monkeypatch.setattr(byol_module, "byol_loss", poisoned)

    return install


def test_stop_names_the_step_and_the_last_good_checkpoint(make_cfg, nan_at_call, tmp_path):
    nan_at_call(2 * 4)  # step 4: the second step of epoch 1 (3 steps per epoch)
    with pytest.raises(NonFiniteLossError) as info:
        train(make_cfg(*HEADS, "trainer.max_epochs=3"))
    message = str(info.value)
    assert message.startswith("the loss became nan at step 4 (epoch 1); training stopped.")
    last = (tmp_path / "checkpoints" / "last.ckpt").resolve()
    assert f"Last good checkpoint: {last} (resume with resume=auto)" in message
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 3  # written at the end of epoch 0, nothing after the bad step
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_skip_drops_the_step_and_counts_it(make_cfg, nan_at_call):
    nan_at_call(2 * 4)
    metrics = train(make_cfg(*HEADS, "trainer.max_epochs=2", "callbacks.nonfinite.mode=skip"))
    assert metrics["train/skipped_steps"] == 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


class SnapshotEachStep(NonFiniteLoss):
    """NonFiniteLoss that also keeps the module's state at the start of every step."""

    snapshots: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.snapshots[trainer.global_step] = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_a_skipped_step_changes_no_parameter_and_no_teacher(make_cfg, nan_at_call):
    nan_at_call(2 * 1)  # step 1
    cfg = make_cfg(*HEADS, "trainer.max_epochs=1", "callbacks.nonfinite.mode=skip",
                   f"callbacks.nonfinite._target_={__name__}.SnapshotEachStep")
    SnapshotEachStep.snapshots.clear()
    train(cfg)
    before, after = SnapshotEachStep.snapshots[1], SnapshotEachStep.snapshots[2]
    for key, value in before.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # BatchNorm statistics are updated by the forward pass itself
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)


def test_a_skipped_step_enqueues_nothing(make_cfg, monkeypatch):
    """MoCo: the keys of a skipped step never reach the queue (they may be as non-finite as its loss)."""
    import ssl_lightning.methods.moco as moco_module

    calls = {"count": 0}
    real = moco_module.moco_loss

    def poisoned(*args):
        calls["count"] += 1
        out = real(*args)
        return out * float("nan") if calls["count"] == 2 else out  # asymmetric MoCo: one call per step

    monkeypatch.setattr(moco_module, "moco_loss", poisoned)
    cfg = make_cfg("method=moco", "method.bn_splits=2", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=100",
                   "data.num_samples=48", "data.batch_size=16", "data.image_size=8", "trainer.max_epochs=1",
                   "~callbacks.knn", "~callbacks.view_grid", "callbacks.nonfinite.mode=skip",
                   f"callbacks.nonfinite._target_={__name__}.SnapshotEachStep")
    SnapshotEachStep.snapshots.clear()
    train(cfg)
    ptr = lambda step: SnapshotEachStep.snapshots[step]["queue_ptr"].item()  # noqa: E731
    assert (ptr(1), ptr(2)) == (16, 16)  # step 0 enqueued 16 keys, the skipped step 1 none
    torch.testing.assert_close(SnapshotEachStep.snapshots[2]["queue"], SnapshotEachStep.snapshots[1]["queue"],
                               rtol=0, atol=0)
