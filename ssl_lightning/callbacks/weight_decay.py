"""Cosine weight-decay schedule, per optimizer step (DINO, Caron et al., 2021; iBOT; I-JEPA)."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback

from ssl_lightning.callbacks.steps import host_scalar, log_step
from ssl_lightning.config import check


def cosine_value(step: int, total_steps: int, base: float, final: float) -> float:
    """``final + (base - final) * (1 + cos(pi k / K)) / 2``: ``base`` at step 0, ``final`` at step ``K``.

    The same curve as the official DINO ``utils.cosine_scheduler`` without warmup (facebookresearch/dino,
    ``main_dino.py``: ``wd_schedule = cosine_scheduler(weight_decay, weight_decay_end, epochs, ...)``).
    """
    progress = min(1.0, step / max(1, total_steps))
    return final + (base - final) * (1 + math.cos(math.pi * progress)) / 2


class WeightDecaySchedule(Callback):
    """Before every batch, set the weight decay of every decayed parameter group to the cosine schedule's value.

    Groups built without weight decay (biases, norms, tokens: ``param_groups``) keep 0. The value depends only
    on ``trainer.global_step``, so a resumed run continues the schedule exactly. Logs ``train/weight_decay``.

    Args:
        base: weight decay at the first step (DINO: 0.04).
        final: weight decay at the last step (DINO: 0.4).
    """

    def __init__(self, base: float = 0.04, final: float = 0.4):
        check(base >= 0, "method.weight_decay", base, "a weight decay >= 0")
        check(final >= 0, "method.weight_decay_end", final, "a weight decay >= 0")
        self.base, self.final = base, final

    def value(self, step: int, total_steps: int) -> float:
        return cosine_value(step, total_steps, self.base, self.final)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        wd = self.value(trainer.global_step, int(trainer.estimated_stepping_batches))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                # decided once, from the decay the group was built with; saved with the optimizer, so kept on resume
                if group.setdefault("scheduled_weight_decay", group["weight_decay"] > 0):
                    group["weight_decay"] = wd
        log_step(trainer, pl_module, "train/weight_decay", host_scalar(wd))
