"""DINO's update rules: teacher-temperature schedule, center update, frozen last layer, per-parameter clipping."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from types import SimpleNamespace

from ssl_lightning.callbacks import CenterUpdate, FreezeLastLayer, teacher_temperature
from ssl_lightning.config import ConfigError
from ssl_lightning.methods.dino import clip_grad_per_parameter_
from tests.conftest import compose_config

TINY_DINO = ["method=dino", "+backbone.depth=2", "+backbone.embed_dim=32", "+backbone.num_heads=2",
             "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"]


@pytest.mark.parametrize("epoch, expected", [(0, 0.04), (1, 0.04 + 0.03 / 29), (15, 0.04 + 0.03 * 15 / 29),
                                             (29, 0.07), (30, 0.07), (299, 0.07)])
def test_teacher_temperature_is_the_official_linspace(epoch, expected):
    assert teacher_temperature(epoch, 0.04, 0.07, 30) == pytest.approx(expected)


def test_teacher_temperature_without_or_with_a_one_epoch_warmup():
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04  # np.linspace(a, b, 1) == [a]
    assert teacher_temperature(1, 0.04, 0.07, 1) == 0.07


def dino_model(tmp_path, *overrides):
    cfg = compose_config(tmp_path, *TINY_DINO, *overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    return model


def test_center_update_is_the_ema_of_the_step_mean_over_micro_batches(tmp_path):
    """Two micro-batches of one optimizer step give the center of their union; momentum 0.9."""
    model = dino_model(tmp_path)
    k = model.center.numel()
    a, b = torch.randn(3, k), torch.randn(5, k)
    model.center.fill_(1.0)
    model.accumulate_center(a.sum(0), count=3)
    model.accumulate_center(b.sum(0), count=5)
    CenterUpdate().optimizer_step(None, model)
    torch.testing.assert_close(model.center, 0.9 * torch.ones(k) + 0.1 * torch.cat([a, b]).mean(0))
    assert model.center_sums.abs().sum() == 0  # reset for the next step
    model.accumulate_center(a.sum(0), count=3)
    before = model.center.clone()
    CenterUpdate().skipped_step(None, model)  # a skipped step does not move the center
    torch.testing.assert_close(model.center, before)
    assert model.center_sums.abs().sum() == 0


def test_center_is_a_persistent_buffer_and_the_sums_are_not(tmp_path):
    state = dino_model(tmp_path).state_dict()
    assert "center" in state and "center_sums" not in state


def test_freeze_last_layer_drops_its_gradients_in_the_first_epochs_only(tmp_path):
    model = dino_model(tmp_path)
    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    rule = FreezeLastLayer(1)
    rule.on_before_optimizer_step(SimpleNamespace(current_epoch=0), model, None)
    assert model.head.last_layer.weight_v.grad is None
    assert model.head.mlp[0].weight.grad is not None
    model.head.last_layer.weight_v.grad = torch.ones_like(model.head.last_layer.weight_v)
    rule.on_before_optimizer_step(SimpleNamespace(current_epoch=1), model, None)
    assert model.head.last_layer.weight_v.grad is not None
    with pytest.raises(ConfigError, match="method.freeze_last_layer_epochs"):
        FreezeLastLayer(-1)


def test_norm_last_layer_freezes_g_and_rows_have_unit_norm(tmp_path):
    model = dino_model(tmp_path)
    layer = model.head.last_layer
    assert not layer.weight_g.requires_grad
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(layer.weight.shape[0]))
    free = dino_model(tmp_path, "method.norm_last_layer=false").head.last_layer
    assert free.weight_g.requires_grad


def test_per_parameter_clipping_matches_the_official_rule():
    big, small = torch.full((4,), 3.0), torch.full((2,), 0.1)  # norms 6 and 0.14
    grads = [big.clone(), small.clone()]
    clip_grad_per_parameter_(grads, 3.0)
    torch.testing.assert_close(grads[0], big * 3.0 / (6.0 + 1e-6))
    torch.testing.assert_close(grads[1], small)
