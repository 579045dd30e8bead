"""DINO and iBOT resume exactly: 2 epochs, stop, resume to 4 == 4 uninterrupted (teacher, centers, optimizer,
weight-decay and LR schedules, teacher temperature across the warm-up, frozen last layer in epoch 1)."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.train import train
from tests.conftest import compose_config

COMMON = ["+backbone.depth=1", "+backbone.embed_dim=32", "+backbone.num_heads=2", "method.out_dim=32",
          "method.hidden_dim=16", "method.bottleneck_dim=8", "data.num_samples=24", "data.batch_size=8",
          "callbacks.knn.k=5", "~callbacks.view_grid", "~callbacks.embedding_projector", "~callbacks.linear_probe",
          "trainer.check_val_every_n_epoch=4", "method.scheduler.warmup_epochs=1", "method.warmup_teacher_temp_epochs=3",
          "method.base_tau=0.9", "trainer.max_epochs=4"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_resume_equals_uninterrupted_run(tmp_path, method):
    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    common = [f"method={method}", *COMMON]
    if method == "ibot":
        common.append("augment.views=[{count:1,blur_prob:1.0},{count:1,blur_prob:0.1,solarize_prob:0.2},"
                      "{count:2,crop_scale:[0.05,0.25],size_ratio:0.5}]")
    train(compose_config(full_dir, *common))
    stop = "+callbacks.stop={_target_: tests.test_resume.StopAfterEpoch, epoch: 2}"
    train(compose_config(first_dir, *common, stop))
    train(compose_config(resumed_dir, *common, f"resume={first_dir}"))

    full, resumed = load(full_dir / "checkpoints" / "last.ckpt"), load(resumed_dir / "checkpoints" / "last.ckpt")
    half = load(first_dir / "checkpoints" / "last.ckpt")
    assert full["global_step"] == resumed["global_step"] == 2 * half["global_step"] == 12
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    centers = ["center"] + (["patch_center"] if method == "ibot" else [])
    for key in centers:
        assert not torch.equal(full["state_dict"][key], half["state_dict"][key])  # the center kept moving
    teacher = "teacher_head.last_layer.weight_v"
    assert not torch.equal(full["state_dict"][teacher], half["state_dict"][teacher])
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    decayed = [g for g in full["optimizer_states"][0]["param_groups"] if g.get("scheduled_weight_decay")]
    resumed_decayed = [g for g in resumed["optimizer_states"][0]["param_groups"] if g.get("scheduled_weight_decay")]
    assert decayed and [g["weight_decay"] for g in decayed] == [g["weight_decay"] for g in resumed_decayed]
    assert full["lr_schedulers"][0]["last_epoch"] == resumed["lr_schedulers"][0]["last_epoch"] == 12
