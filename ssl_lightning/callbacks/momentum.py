"""Momentum (EMA) update of a teacher network, for BYOL, MoCo and every method with a momentum encoder."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ssl_lightning.config import check


def cosine_tau(step: int, total_steps: int, base_tau: float, final_tau: float) -> float:
    """BYOL's schedule (Grill et al., 2020, Sec. 3.2): tau = final - (final - base) * (cos(pi k / K) + 1) / 2."""
    progress = min(1.0, step / max(1, total_steps))
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update_(teacher: list[torch.Tensor], student: list[torch.Tensor], tau: float) -> None:
    """teacher <- tau * teacher + (1 - tau) * student, as one fused call over all tensors."""
    torch._foreach_lerp_(teacher, student, 1.0 - tau)


class MomentumUpdate(Callback):
    """After every optimizer step, move each teacher towards its student.

    The pairs come from the module's ``momentum_pairs()`` (a list of ``(student, teacher)`` modules), so the
    teacher weights live on the module: checkpointed, moved to the device and identical on every DDP rank.
    Gradient-accumulation micro-steps (where the optimizer did not step) do not update. ``tau`` depends only
    on the optimizer step, so a resumed run continues the schedule exactly. Logs ``train/tau``.

    Args:
        base_tau: tau at the first step, in [0, 1].
        final_tau: tau at the last step (BYOL: 1.0); equal to ``base_tau`` for a constant momentum (MoCo).
    """

    def __init__(self, base_tau: float = 0.996, final_tau: float = 1.0):
        check(0.0 <= base_tau <= 1.0, "method.base_tau", base_tau, "a momentum in [0, 1]")
        check(0.0 <= final_tau <= 1.0, "method.final_tau", final_tau, "a momentum in [0, 1]")
        self.base_tau, self.final_tau = base_tau, final_tau
        self._teacher: list[torch.Tensor] = []
        self._student: list[torch.Tensor] = []
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._teacher, self._student = [], []
        for student, teacher in pl_module.momentum_pairs():
            s_params, t_params = list(student.parameters()), list(teacher.parameters())
            if len(s_params) != len(t_params):
                raise RuntimeError(f"teacher {type(teacher).__name__} does not mirror its student")
            self._student += s_params
            self._teacher += t_params
        self._last_step = trainer.global_step

    def tau(self, step: int, total_steps: int) -> float:
        return cosine_tau(step, total_steps, self.base_tau, self.final_tau)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self._last_step:  # accumulation micro-step: no optimizer step happened
            return
        self._last_step = trainer.global_step
        if getattr(pl_module, "step_skipped", False):  # the optimizer step was skipped (non-finite loss)
            return
        tau = self.tau(trainer.global_step - 1, int(trainer.estimated_stepping_batches))
        ema_update_(self._teacher, self._student, tau)
        pl_module.log("train/tau", tau, on_step=True, on_epoch=False)
