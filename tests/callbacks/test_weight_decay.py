"""The cosine weight-decay schedule: its values at chosen steps, and only decayed groups follow it."""

import math

import pytest
import torch
from torch import nn

from ssl_lightning.callbacks import WeightDecaySchedule, cosine_value
from ssl_lightning.config import ConfigError
from ssl_lightning.optim import param_groups


def test_cosine_value_at_chosen_steps():
    assert cosine_value(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine_value(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_value(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine_value(25, 100, 0.04, 0.4) == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_value(500, 100, 0.04, 0.4) == pytest.approx(0.4)  # clamped past the end


class _Trainer:
    def __init__(self, optimizer, step, total):
        self.optimizers, self.global_step, self.estimated_stepping_batches = [optimizer], step, total


class _Module:
    def __init__(self):
        self.logged = {}

    def log(self, key, value, **_):
        self.logged[key] = value


def test_only_decayed_groups_follow_the_schedule():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.04), lr=1e-3)
    callback, module = WeightDecaySchedule(0.04, 0.4), _Module()
    callback.on_train_batch_start(_Trainer(optimizer, 50, 100), module, None, 0)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == pytest.approx(0.22)
    assert no_decay["weight_decay"] == 0.0
    assert module.logged["train/weight_decay"] == pytest.approx(0.22)
    # A resumed optimizer carries the flag: the decayed group stays scheduled even where the value is 0.
    optimizer.load_state_dict(optimizer.state_dict())
    WeightDecaySchedule(0.0, 0.0).on_train_batch_start(_Trainer(optimizer, 0, 100), module, None, 0)
    WeightDecaySchedule(0.04, 0.4).on_train_batch_start(_Trainer(optimizer, 100, 100), module, None, 0)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.4)
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


def test_negative_weight_decay_is_refused():
    with pytest.raises(ConfigError, match="method.weight_decay_end=-0.1"):
        WeightDecaySchedule(0.04, -0.1)
