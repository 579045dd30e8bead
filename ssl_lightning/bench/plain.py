"""The plain-PyTorch baselines of the benchmark: each method's training step written the way a user would
without a framework, to measure our overhead. Same modules, the method's own forward and pure loss, the same
optimizer, LR schedule, precision, clipping and EMA / queue / prototype updates, in a hand-written loop: no
Lightning Trainer, callbacks, logging or hooks.

SimCLR and BYOL are written out in full; every other method calls its own ``training_step`` with logging
switched off (the step holds the method's forward and loss, nothing else) and then does the update rules the
Lightning callbacks would do, as plain fused calls.
"""

from __future__ import annotations

import contextlib

import torch

from ssl_lightning.callbacks.momentum import cosine_tau, ema_update_
from ssl_lightning.losses import byol_loss, nt_xent_loss
from ssl_lightning.optim import scaled_lr


def _optimizer(method, batch_size: int, total_steps: int):
    factory = method.optimizer_factory
    method.total_batch_size = lambda: batch_size  # what the method reads from its Trainer (one device)
    lr = scaled_lr(factory.keywords["lr"], batch_size, method.lr_scaling)
    groups = [g for g in method.parameter_groups(factory.keywords.get("weight_decay", 0.0)) if g["params"]]
    opt = factory(groups, lr=lr)
    sched = method.scheduler_factory(opt, total_steps=total_steps, steps_per_epoch=total_steps) if method.scheduler_factory else None
    return opt, sched


def autocast(device: torch.device, precision: str):
    """The autocast context Lightning's ``bf16-mixed`` / ``16-mixed`` use; a no-op for full precision."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _update(opt, sched, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched:
        sched.step()


def _silence(method) -> None:
    """No logging: the plain loop has no logger (``log``, ``log_step`` and ``log_lr`` are no-ops on this instance)."""
    method.log = lambda *args, **kwargs: None
    method.log_step = lambda *args, **kwargs: None
    method.log_lr = lambda: None


def simclr(method, device, batch_size: int, total_steps: int, precision: str = "32-true"):
    opt, sched = _optimizer(method, batch_size, total_steps)
    method.train()

    def step(batch):
        (x1, x2), _ = batch
        with autocast(device, precision):
            z1, z2 = method.projector(method.backbone(torch.cat([x1, x2]))).chunk(2)
            loss = nt_xent_loss(z1, z2, method.temperature)
        _update(opt, sched, loss)

    return step


def byol(method, device, batch_size: int, total_steps: int, precision: str = "32-true"):
    opt, sched = _optimizer(method, batch_size, total_steps)
    method.train()
    online = list(method.backbone.parameters()) + list(method.projector.parameters())
    target = list(method.teacher_backbone.parameters()) + list(method.teacher_projector.parameters())
    update = method.momentum_update
    k = 0

    def step(batch):
        nonlocal k
        (x1, x2), _ = batch
        with autocast(device, precision):
            p1 = method.predictor(method.projector(method.backbone(x1)))
            p2 = method.predictor(method.projector(method.backbone(x2)))
            with torch.no_grad():
                t1 = method.teacher_projector(method.teacher_backbone(x1))
                t2 = method.teacher_projector(method.teacher_backbone(x2))
            loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        _update(opt, sched, loss)
        ema_update_(target, online, cosine_tau(k, total_steps, update.base_tau, update.final_tau))
        k += 1

    return step


def generic(method, device, batch_size: int, total_steps: int, precision: str = "32-true"):
    """Any method: its ``training_step`` (forward + loss, logging off), backward, optional clipping, optimizer
    and schedule, then the EMA of ``momentum_pairs()`` (one fused lerp), the queue (``enqueue`` of the step's
    keys), SwAV's prototype freeze and normalisation."""
    opt, sched = _optimizer(method, batch_size, total_steps)
    method.train()
    _silence(method)
    student, teacher = [], []
    for s, t in method.momentum_pairs() if hasattr(method, "momentum_pairs") else []:
        student += list(s.parameters())
        teacher += list(t.parameters())
    update = getattr(method, "momentum_update", None)
    clip = getattr(method, "clip_grad", None) or getattr(method, "grad_clip", None)
    params = [p for p in method.parameters() if p.requires_grad]
    freeze = getattr(method, "freeze_prototypes_epochs", 0) > 0  # the benchmark runs inside epoch 0
    k = 0

    def step(batch):
        nonlocal k
        with autocast(device, precision):
            out = method.training_step(batch, k)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if freeze:
            method.prototypes.weight.grad = None
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if sched:
            sched.step()
        if teacher:
            ema_update_(teacher, student, cosine_tau(k, total_steps, update.base_tau, update.final_tau))
        if out.get("enqueue") is not None:
            method.enqueue(out["enqueue"].detach())
        if hasattr(method, "normalize_prototypes"):
            method.normalize_prototypes()
        k += 1

    return step


PLAIN_STEPS = {"SimCLR": simclr, "BYOL": byol}


def plain_step(method, device, batch_size: int, total_steps: int, precision: str = "32-true"):
    return PLAIN_STEPS.get(type(method).__name__, generic)(method, device, batch_size, total_steps, precision)
