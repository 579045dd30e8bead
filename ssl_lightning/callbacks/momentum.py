"""Momentum (EMA) update of a teacher network, for BYOL, MoCo and every method with a momentum encoder."""

from __future__ import annotations

import copy
import math

import lightning as L
import torch
from torch import nn

from ssl_lightning.callbacks.steps import AfterOptimizerStep, host_scalar, log_step
from ssl_lightning.config import check


def cosine_tau(step: int, total_steps: int, base_tau: float, final_tau: float) -> float:
    """BYOL's schedule (Grill et al., 2020, Sec. 3.2): tau = final - (final - base) * (cos(pi k / K) + 1) / 2."""
    progress = min(1.0, step / max(1, total_steps))
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * progress) + 1) / 2


def linear_tau(step: int, total_steps: int, base_tau: float, final_tau: float) -> float:
    """I-JEPA's schedule (facebookresearch/ijepa, ``src/train.py``: ``momentum_scheduler``): tau rises linearly,
    ``base + (final - base) k / K``."""
    progress = min(1.0, step / max(1, total_steps))
    return base_tau + (final_tau - base_tau) * progress


TAU_SCHEDULES = {"cosine": cosine_tau, "linear": linear_tau}


def frozen_copy(module: nn.Module) -> nn.Module:
    """A teacher: a copy of ``module`` that takes no gradients (moved by the EMA update only)."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], tau: float) -> None:
    """teacher <- tau * teacher + (1 - tau) * student, as one fused call over all tensors."""
    torch._foreach_lerp_(teacher, student, 1.0 - tau)


class MomentumUpdate(AfterOptimizerStep):
    """After every optimizer step, move each teacher towards its student.

    The pairs come from the module's ``momentum_pairs()`` (a list of ``(student, teacher)`` modules), so the
    teacher weights live on the module: checkpointed, moved to the device and identical on every DDP rank.
    Gradient-accumulation micro-steps (where the optimizer did not step) do not update. ``tau`` depends only
    on the optimizer step, so a resumed run continues the schedule exactly. Logs ``train/tau``.

    Args:
        base_tau: tau at the first step, in [0, 1].
        final_tau: tau at the last step (BYOL: 1.0); equal to ``base_tau`` for a constant momentum (MoCo).
        schedule: ``"cosine"`` (BYOL, :func:`cosine_tau`) or ``"linear"`` (I-JEPA, :func:`linear_tau`).
    """

    def __init__(self, base_tau: float = 0.996, final_tau: float = 1.0, schedule: str = "cosine"):
        check(0.0 <= base_tau <= 1.0, "method.base_tau", base_tau, "a momentum in [0, 1]")
        check(0.0 <= final_tau <= 1.0, "method.final_tau", final_tau, "a momentum in [0, 1]")
        check(schedule in TAU_SCHEDULES, "method.tau_schedule", schedule, f"one of {', '.join(TAU_SCHEDULES)}")
        self.base_tau, self.final_tau, self.schedule = base_tau, final_tau, schedule
        self._teacher: list[torch.Tensor] = []
        self._student: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._teacher, self._student = [], []
        for student, teacher in pl_module.momentum_pairs():
            s_params, t_params = list(student.parameters()), list(teacher.parameters())
            if len(s_params) != len(t_params):
                raise RuntimeError(f"teacher {type(teacher).__name__} does not mirror its student")
            self._student += s_params
            self._teacher += t_params

    def tau(self, step: int, total_steps: int) -> float:
        return TAU_SCHEDULES[self.schedule](step, total_steps, self.base_tau, self.final_tau)

    def optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tau = self.tau(trainer.global_step - 1, int(trainer.estimated_stepping_batches))
        ema_update_(self._teacher, self._student, tau)
        log_step(trainer, pl_module, "train/tau", host_scalar(tau))
