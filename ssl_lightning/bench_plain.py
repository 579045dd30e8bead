"""The plain-PyTorch baselines of the benchmark: each method's training step written the way a user
would without a framework (same modules, pure loss, optimizer and schedule), to measure our overhead."""

from __future__ import annotations

import torch

from ssl_lightning.losses import byol_loss, nt_xent_loss
from ssl_lightning.optim import param_groups, scaled_lr


def _optimizer(method, batch_size: int, total_steps: int):
    factory = method.optimizer_factory
    lr = scaled_lr(factory.keywords["lr"], batch_size, method.lr_scaling)
    opt = factory(param_groups(method, factory.keywords.get("weight_decay", 0.0)), lr=lr)
    sched = method.scheduler_factory(opt, total_steps=total_steps, steps_per_epoch=total_steps) if method.scheduler_factory else None
    return opt, sched


def simclr(method, device, batch_size: int, total_steps: int):
    opt, sched = _optimizer(method, batch_size, total_steps)
    method.train()

    def step(views):
        x1, x2 = views
        z1, z2 = method.projector(method.backbone(torch.cat([x1, x2]))).chunk(2)
        loss = nt_xent_loss(z1, z2, method.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched:
            sched.step()

    return step


def byol(method, device, batch_size: int, total_steps: int):
    opt, sched = _optimizer(method, batch_size, total_steps)
    method.train()
    online = list(method.backbone.parameters()) + list(method.projector.parameters())
    target = list(method.teacher_backbone.parameters()) + list(method.teacher_projector.parameters())
    tau = method.momentum_update.base_tau

    def step(views):
        x1, x2 = views
        p1 = method.predictor(method.projector(method.backbone(x1)))
        p2 = method.predictor(method.projector(method.backbone(x2)))
        with torch.no_grad():
            t1 = method.teacher_projector(method.teacher_backbone(x1))
            t2 = method.teacher_projector(method.teacher_backbone(x2))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        with torch.no_grad():
            for t, s in zip(target, online):
                t.mul_(tau).add_(s, alpha=1 - tau)

    return step


PLAIN_STEPS = {"SimCLR": simclr, "BYOL": byol}
