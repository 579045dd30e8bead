"""Optimizer pieces: parameter groups without decay on biases and norms, LARS, warmup + cosine, step decay."""

from __future__ import annotations

import math

import torch
from torch import nn
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.config import check


LR_SCALING = ("linear", "sqrt", "none")


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """The LR for a total batch: ``linear`` base x B/256, ``sqrt`` base x sqrt(B), ``none`` base."""
    return {"linear": base_lr * batch_size / 256, "sqrt": base_lr * math.sqrt(batch_size), "none": base_lr}[rule]


def param_groups(module: nn.Module, weight_decay: float, extra_no_decay: set[str] = frozenset()) -> list[dict]:
    """Split trainable parameters into a decayed group and an undecayed, LARS-excluded group.

    Biases and normalisation parameters (every tensor with ``ndim <= 1``) and the names a submodule lists
    in ``no_weight_decay()`` (tokens, as in timm) get no weight decay and no LARS adaptation (SimCLR,
    Chen et al., 2020, Appendix B.1; BYOL, Grill et al., 2020, Appendix C).
    """
    no_decay_names = set(extra_no_decay)
    for prefix, sub in module.named_modules():
        if hasattr(sub, "no_weight_decay"):
            no_decay_names |= {f"{prefix}.{n}" if prefix else n for n in sub.no_weight_decay()}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in no_decay_names else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For each parameter not in a group with ``lars_exclude=True``, the update ``g + wd * w`` is scaled by the
    trust ratio ``eta * ||w|| / ||g + wd * w||`` (1 where either norm is zero), then goes through momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr < 0 or eta <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"LARS needs lr >= 0, eta > 0 and 0 <= momentum < 1, got lr={lr}, eta={eta}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if not group["lars_exclude"]:
                w_norm = torch._foreach_norm(params)
                g_norm = torch._foreach_norm(grads)
                one = torch.ones((), device=params[0].device)
                trust = [
                    torch.where((w > 0) & (g > 0), group["eta"] * w / g, one) for w, g in zip(w_norm, g_norm)
                ]
                grads = torch._foreach_mul(grads, trust)
            bufs = []
            for p, g in zip(params, grads):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    bufs.append((state["momentum_buffer"], g))
            if bufs:
                torch._foreach_mul_([b for b, _ in bufs], group["momentum"])
                torch._foreach_add_([b for b, _ in bufs], [g for _, g in bufs])
            torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-group["lr"])
        return loss


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 10.0,
    final_lr_ratio: float = 0.0,
    warmup_steps: int | None = None,
    start_lr_ratio: float = 0.0,
    warmup_includes_start: bool = False,
) -> LambdaLR:
    """Per-step linear warmup to the base LR over ``warmup_epochs``, then cosine decay to
    ``final_lr_ratio * base LR`` at ``total_steps`` (Loshchilov & Hutter, 2017; Goyal et al., 2017).

    The warmup climbs from ``start_lr_ratio * base LR``: step k of W has ``start + (k + 1) / W * (base - start)``
    (start 0: base / W at the first step; I-JEPA: 2e-4 -> 1e-3, facebookresearch/ijepa ``src/utils/schedulers.py``
    ``WarmupCosineSchedule``). ``warmup_includes_start`` makes it ``np.linspace(start, base, W)``, the first step at
    the start LR, as SwAV's scripts do (``--start_warmup 0.3 --base_lr 4.8``: 0.0625).

    ``warmup_steps``, when given, counts the warmup in optimizer steps instead of epochs (language models).
    Parameter groups with ``fixed_lr=True`` keep their LR (SimSiam's predictor).
    """
    check(0 <= start_lr_ratio <= 1, "method.scheduler.start_lr_ratio", start_lr_ratio, "a fraction in [0, 1]")
    warmup = warmup_steps if warmup_steps is not None else int(round(warmup_epochs * steps_per_epoch))
    if warmup > total_steps:
        rank_zero_warn(f"this run ({total_steps} optimizer steps) is shorter than its warm-up ({warmup} steps): the "
                       f"learning rate never reaches its base value; lower method.warmup_epochs for a short run")
    warmup = min(warmup, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            if warmup_includes_start:  # np.linspace(start, base, warmup): the first step at the start LR
                return start_lr_ratio + (1 - start_lr_ratio) * step / max(1, warmup - 1)
            return start_lr_ratio + (1 - start_lr_ratio) * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    lambdas = [(lambda _: 1.0) if g.get("fixed_lr") else factor for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)


def step_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8),
    gamma: float = 0.2,
    warmup_epochs: float = 0.0,
) -> LambdaLR:
    """Step decay: the LR is multiplied by ``gamma`` at each milestone, given as a fraction of training so
    that the schedule follows ``trainer.max_epochs`` (RotNet on CIFAR-10, Gidaris et al., 2018: x0.2 at
    epochs 30, 60 and 80 of 100, i.e. milestones 0.3, 0.6, 0.8). Optional linear warmup, per step.

    Parameter groups with ``fixed_lr=True`` keep their LR.
    """
    check(all(0 < m < 1 for m in milestones) and list(milestones) == sorted(milestones), "method.scheduler.milestones",
          list(milestones), "increasing fractions of training in (0, 1)")
    check(0 < gamma <= 1, "method.scheduler.gamma", gamma, "a decay factor in (0, 1]")
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total_steps)
    bounds = [int(round(m * total_steps)) for m in milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return gamma ** sum(step >= b for b in bounds)

    lambdas = [(lambda _: 1.0) if g.get("fixed_lr") else factor for g in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)
