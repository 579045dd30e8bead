"""DINO and iBOT through the real configs and Trainer: bad input fails before training, the last layer is
frozen exactly during epoch 1, the signals are logged, and resume is exact."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ssl_lightning.config import ConfigError
from ssl_lightning.train import build, train
from tests.conftest import compose_config

TINY_VIT = ["+backbone.depth=1", "+backbone.embed_dim=32", "+backbone.num_heads=2"]
HEADS = ["method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"]
RUN = ["data.num_samples=32", "data.batch_size=8", "callbacks.knn.k=5", "~callbacks.view_grid",
       "~callbacks.embedding_projector", "trainer.check_val_every_n_epoch=1", "method.scheduler.warmup_epochs=1",
       "method.warmup_teacher_temp_epochs=2"]


@pytest.mark.parametrize("overrides, key", [
    (["method=dino", "method.student_temp=0"], "method.student_temp"),
    (["method=dino", "method.teacher_temp=-0.1"], "method.teacher_temp"),
    (["method=ibot", "method.warmup_teacher_patch_temp=0"], "method.warmup_teacher_patch_temp"),
    (["method=dino", "method.center_momentum=1.0"], "method.center_momentum"),
    (["method=dino", "method.center_momentum=-0.1"], "method.center_momentum"),
    (["method=dino", "backbone=vit_tiny"], "augment.views"),  # local crops, a ViT of one input size
    (["method=ibot", "backbone=resnet18"], "ViT"),
    (["method=ibot", "augment.masking.mask_ratio_range=[0.0,0.5]"], "augment.masking.mask_ratio_range"),
    (["method=ibot", "augment.masking.mask_ratio_range=[0.3,1.0]"], "augment.masking.mask_ratio_range"),
    (["method=ibot", "augment.masking.mask_prob=1.5"], "augment.masking.mask_prob"),
    (["method=ibot", "method.head_bn=true", "method.head_bn_stats=per_token"], "method.head_bn_stats"),
    (["method=ibot", "method.head_bn_stats=separate"], "method.head_bn_stats='separate' is not allowed: joint unless"),
])
def test_bad_input_fails_before_training(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key):
        vit = [] if "backbone=resnet18" in overrides else TINY_VIT
        build(compose_config(tmp_path, *overrides, *vit, *HEADS))


@pytest.mark.parametrize("key", ["method.warmup_teacher_temp_epochs", "method.scheduler.warmup_epochs"])
def test_a_warmup_longer_than_training_fails_before_training(tmp_path, key):
    with pytest.raises(ConfigError, match=key):
        train(compose_config(tmp_path, "method=dino", *TINY_VIT, *HEADS, "trainer.max_epochs=2",
                             "method.warmup_teacher_temp_epochs=1", "method.scheduler.warmup_epochs=1", f"{key}=3"))


class LastLayerWatch(Callback):
    """Records the head's last layer and first MLP layer at the start and end of every epoch."""

    def __init__(self):
        self.snapshots: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []

    def _snap(self, trainer, pl_module, when):
        head = pl_module.head
        self.snapshots.append((trainer.current_epoch, when, head.last_layer.weight_v.detach().clone(),
                               head.mlp[0].weight.detach().clone()))

    def on_train_epoch_start(self, trainer, pl_module):
        self._snap(trainer, pl_module, "start")

    def on_train_epoch_end(self, trainer, pl_module):
        self._snap(trainer, pl_module, "end")


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_last_layer_frozen_exactly_in_epoch_1_and_signals_logged(tmp_path, method):
    watch = LastLayerWatch()
    cfg = compose_config(tmp_path, f"method={method}", *TINY_VIT, *HEADS, *RUN, "trainer.max_epochs=2")
    from ssl_lightning import train as train_module

    original = train_module.build

    def build_with_watch(c):
        datamodule, model, callbacks, loggers, ckpt = original(c)
        return datamodule, model, [*callbacks, watch], loggers, ckpt

    train_module.build = build_with_watch
    try:
        metrics = train(cfg)
    finally:
        train_module.build = original
    (e0, _, v0s, m0s), (_, _, v0e, m0e), (e1, _, v1s, _), (_, _, v1e, _) = watch.snapshots
    assert (e0, e1) == (0, 1)
    assert torch.equal(v0s, v0e), "the last layer moved during the first epoch"
    assert not torch.equal(m0s, m0e), "the rest of the head did not train during the first epoch"
    assert not torch.equal(v1s, v1e), "the last layer did not train in the second epoch"
    for key in ("train/loss", "train/teacher_entropy", "train/kl", "train/teacher_temp", "train/tau",
                "train/weight_decay", "val/knn_top1", "val/linear_top1", "train/rank"):
        assert key in metrics, key
    assert metrics["train/teacher_temp"] == pytest.approx(0.07)  # warm-up of 2 epochs: epoch 1 has the final value
    assert metrics["train/kl"] >= -1e-4
    if method == "ibot":
        assert {"train/loss_cls", "train/loss_patch", "train/patch_teacher_entropy"} <= set(metrics)


@pytest.mark.parametrize("stats", ["joint", "separate"])
def test_ibot_head_batchnorm_statistics_joint_or_separate(tmp_path, stats):
    """joint (the official head): one BatchNorm over [CLS] and patch tokens; separate: the [CLS] bottleneck is
    what the head gives for the [CLS] tokens alone, the patches' what it gives for the patches alone."""
    method = build(compose_config(tmp_path, "method=ibot", *TINY_VIT, *HEADS, "method.head_bn=true",
                                  f"method.head_bn_stats={stats}"))[1].train()
    tokens = torch.randn(6, 5, 32)
    tokens[:, 0] += 3.0  # [CLS] tokens far from the patches: their statistics differ
    _, patch, b = method.heads(tokens)
    alone_cls, alone_patch = method.head.bottleneck(tokens[:, :1])[:, 0], method.head.bottleneck(tokens[:, 1:])
    joint = method.head.bottleneck(tokens)
    if stats == "separate":
        torch.testing.assert_close(b, alone_cls)
        torch.testing.assert_close(patch, method.head.last_layer(alone_patch))
    else:
        torch.testing.assert_close(b, joint[:, 0])
        assert not torch.allclose(b, alone_cls, atol=1e-3)
