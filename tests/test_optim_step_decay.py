import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.optim import step_decay


def lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_step_decay_follows_rotnets_cifar_schedule():
    # 100 "epochs" of one step: x0.2 after epochs 30, 60 and 80 (Gidaris et al., 2018, Sec. 4.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    got = lrs(step_decay(opt, total_steps=100, steps_per_epoch=1), opt, 100)
    expected = [0.1] * 30 + [0.02] * 30 + [0.004] * 20 + [0.0008] * 20
    assert got == pytest.approx(expected)


def test_step_decay_warmup_and_fixed_lr_groups():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)], "fixed_lr": True}], lr=1.0)
    sched = step_decay(opt, total_steps=10, steps_per_epoch=2, milestones=(0.5,), gamma=0.1, warmup_epochs=1)
    first = []
    for _ in range(10):
        first.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [a for a, _ in first] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert all(b == 1.0 for _, b in first)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"milestones": (0.8, 0.3)}, r"method.scheduler.milestones=\[0.8, 0.3\] is not allowed"),
    ({"milestones": (0.3, 1.5)}, r"method.scheduler.milestones=\[0.3, 1.5\] is not allowed"),
    ({"gamma": 0.0}, r"method.scheduler.gamma=0.0 is not allowed"),
])
def test_bad_schedules_are_named(kwargs, message):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ConfigError, match=message):
        step_decay(opt, total_steps=10, steps_per_epoch=1, **kwargs)
