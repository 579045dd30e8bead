import math

import pytest
import torch

import ssl_lightning.callbacks.momentum as momentum
from ssl_lightning.callbacks import MomentumUpdate, cosine_tau, ema_update_
from ssl_lightning.train import train


def test_cosine_schedule_endpoints_and_midpoint():
    assert cosine_tau(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_tau(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_tau(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    # BYOL Sec. 3.2: 1 - (1 - base) (cos(pi k / K) + 1) / 2
    assert cosine_tau(25, 100, 0.99, 1.0) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)


def test_constant_momentum_when_base_equals_final():
    assert [cosine_tau(k, 10, 0.99, 0.99) for k in range(11)] == pytest.approx([0.99] * 11)


def test_fused_update_equals_reference_loop():
    teacher = [torch.randn(3, 4), torch.randn(5)]
    student = [torch.randn(3, 4), torch.randn(5)]
    expected = [0.9 * t + 0.1 * s for t, s in zip(teacher, student)]
    ema_update_(teacher, student, 0.9)
    for t, e in zip(teacher, expected):
        torch.testing.assert_close(t, e)


@pytest.mark.parametrize("tau", [-0.1, 1.5])
def test_tau_outside_unit_interval_is_rejected(tau):
    with pytest.raises(ValueError, match=r"method.base_tau=.* is not allowed: a momentum in \[0, 1\]"):
        MomentumUpdate(base_tau=tau)


def test_no_update_on_gradient_accumulation_micro_steps(make_cfg, monkeypatch):
    """4 batches with accumulate_grad_batches=2: 2 optimizer steps, so exactly 2 EMA updates, after each."""
    calls = []
    real = momentum.ema_update_

    def spy(teacher, student, tau):
        calls.append(tau)
        real(teacher, student, tau)

    monkeypatch.setattr(momentum, "ema_update_", spy)
    cfg = make_cfg("method=byol", "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2", "data.num_samples=64",
                   "data.batch_size=16", "~callbacks.knn", "~callbacks.view_grid", "method.base_tau=0.9")
    train(cfg)
    assert len(calls) == 2
    # tau follows the schedule over the 2 optimizer steps (steps 0 and 1 of K = 2)
    assert calls == [pytest.approx(0.9), pytest.approx(cosine_tau(1, 2, 0.9, 1.0))]


def test_linear_schedule_is_ijepas():
    """facebookresearch/ijepa src/train.py: m_i = ema0 + i (ema1 - ema0) / (ipe x epochs)."""
    from ssl_lightning.callbacks import linear_tau

    assert [linear_tau(k, 4, 0.996, 1.0) for k in range(5)] == pytest.approx([0.996, 0.997, 0.998, 0.999, 1.0])
    assert linear_tau(9, 4, 0.996, 1.0) == 1.0
    update = MomentumUpdate(0.996, 1.0, schedule="linear")
    assert update.tau(1, 4) == pytest.approx(0.997)
    assert MomentumUpdate(0.996, 1.0).tau(1, 4) == pytest.approx(cosine_tau(1, 4, 0.996, 1.0))  # cosine stays the default


def test_unknown_tau_schedule_is_rejected():
    with pytest.raises(ValueError, match="method.tau_schedule='exp' is not allowed: one of cosine, linear"):
        MomentumUpdate(schedule="exp")
