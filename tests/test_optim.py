import math

import pytest
import torch
from torch import nn

from ssl_lightning.optim import LARS, param_groups, scaled_lr, warmup_cosine


def lars_reference(w, g, buf, lr, momentum, wd, eta, exclude):
    """You et al. (2017), Algorithm 1 as in SimCLR/BYOL: d = g + wd w; d *= eta ||w|| / ||d|| (if both > 0);
    buf = m buf + d; w -= lr buf."""
    d = g + wd * w
    if not exclude and w.norm() > 0 and d.norm() > 0:
        d = d * eta * w.norm() / d.norm()
    buf = d.clone() if buf is None else momentum * buf + d
    return w - lr * buf, buf


def test_lars_matches_reference_over_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = param_groups(model, weight_decay=1e-3)
    opt = LARS(groups, lr=0.5, momentum=0.9, eta=0.02)
    ref = {id(p): (p.detach().clone(), None) for p in model.parameters()}
    excluded = {id(p) for p in groups[1]["params"]}
    for _ in range(3):
        x = torch.randn(8, 5)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        for p in model.parameters():
            w, buf = ref[id(p)]
            wd = 0.0 if id(p) in excluded else 1e-3
            ref[id(p)] = lars_reference(w, p.grad, buf, 0.5, 0.9, wd, 0.02, id(p) in excluded)
        opt.step()
        for p in model.parameters():
            torch.testing.assert_close(p.detach(), ref[id(p)][0])


def test_param_groups_exclude_biases_norms_and_tokens():
    from ssl_lightning.backbones import vit

    model = vit("tiny", image_size=8, patch_size=4, depth=1)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "cls_token" in {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=20, steps_per_epoch=5, warmup_epochs=1, final_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def test_warmup_from_a_start_ratio_as_ijepa():
    """facebookresearch/ijepa WarmupCosineSchedule: start_lr + (k + 1)/W (ref_lr - start_lr) during warmup, then cosine
    to the final LR (here 2e-4 -> 1e-3 over 4 steps, then to 1e-6)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = warmup_cosine(opt, total_steps=12, steps_per_epoch=4, warmup_epochs=1, final_lr_ratio=1e-3, start_lr_ratio=0.2)
    lrs = []
    for _ in range(13):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2e-4 + (k + 1) / 4 * 8e-4 for k in range(4)])
    assert lrs[4] == pytest.approx(1e-3) and lrs[12] == pytest.approx(1e-6)
    assert lrs[8] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)


def test_fixed_lr_groups_keep_their_lr():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "fixed_lr": True}], lr=0.5)
    sched = warmup_cosine(opt, total_steps=10, steps_per_epoch=2, warmup_epochs=1)
    for _ in range(6):
        opt.step()
        sched.step()
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[0]["lr"] < 0.5


def test_lr_scaling_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)  # SimCLR B.1: both rules agree at 4096
    assert scaled_lr(0.075, 128, "sqrt") == pytest.approx(0.075 * math.sqrt(128))
    assert scaled_lr(0.1, 999, "none") == 0.1
