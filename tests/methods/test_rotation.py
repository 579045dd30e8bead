"""RotNet trains on tiny made-up data, logs pretext accuracy, and keeps the evaluation interface."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.train import train
from tests.methods.tensorboard import scalars
from tests.conftest import error_of

SMALL = ["method=rotation", "data.image_size=8", "callbacks.knn.k=10", "~callbacks.model_checkpoint"]


def test_trains_with_falling_loss_and_pretext_accuracy_above_chance(make_cfg, tmp_path):
    metrics = train(make_cfg(*SMALL, "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=1"))
    logged = scalars(tmp_path)
    assert {"train/loss", "train/pretext_acc", "val/pretext_acc", "val/knn_top1", "val/linear_top1"} <= set(logged)
    loss = logged["train/loss"]
    assert sum(loss[-4:]) / 4 < 0.85 * sum(loss[:4]) / 4, loss
    assert sum(logged["train/pretext_acc"][-4:]) / 4 > 40, logged["train/pretext_acc"]  # chance: 25%
    assert metrics["val/pretext_acc"] > 35, metrics  # held-out images, all four rotations of each


def test_vit_backbone(make_cfg):
    metrics = train(make_cfg(*SMALL, "backbone=vit_tiny", "+backbone.depth=2", "+backbone.embed_dim=64",
                             "+backbone.num_heads=2", "trainer.fast_dev_run=true"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/pretext_acc" in metrics


def test_validation_returns_features_of_the_unrotated_images(make_cfg):
    cfg = make_cfg(*SMALL)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).eval()
    model.log = lambda *a, **k: None
    x, y = torch.randn(5, 3, 8, 8), torch.arange(5)
    with torch.no_grad():
        out = model.validation_step((x, y), 0)
        torch.testing.assert_close(out["h"], model(x))
    assert torch.equal(out["y"], y)


def test_head_is_linear_by_default_or_an_mlp(make_cfg):
    cfg = make_cfg(*SMALL)
    backbone = instantiate(cfg.backbone)
    linear = instantiate(cfg.method, backbone=backbone)
    assert [type(m).__name__ for m in linear.head] == ["Linear"] and linear.head[0].out_features == 4
    mlp = instantiate(cfg.method, backbone=backbone, hidden_dim=32)
    assert [type(m).__name__ for m in mlp.head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["augment=simclr"], "augment.views gives 2 views but method RotNet needs 1"),
        (["method.hidden_dim=0"], "method.hidden_dim=0 is not allowed: null (a linear head) or a width > 0"),
        (["method.scheduler.milestones=[0.8,0.3]"], "method.scheduler.milestones=[0.8, 0.3] is not allowed"),
    ],
)
def test_bad_values_are_named(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*SMALL, *overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)
