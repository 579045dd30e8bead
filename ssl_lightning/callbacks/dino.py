"""DINO's and iBOT's update rules: the teacher-temperature schedule, the center update, the frozen last layer."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from ssl_lightning.callbacks.steps import AfterOptimizerStep
from ssl_lightning.config import check


def teacher_temperature(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """Linear warm-up of the teacher temperature over ``warmup_epochs`` epochs, then constant: the official
    ``np.linspace(warmup_temp, temp, warmup_epochs)`` for epochs ``0 .. warmup_epochs - 1`` (so the last
    warm-up epoch already has ``temp``), ``temp`` after (facebookresearch/dino, ``main_dino.py``,
    ``DINOLoss.teacher_temp_schedule``; 0.04 -> 0.07 over 30 epochs, Sec. 3.1 / Appendix)."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


class CenterUpdate(AfterOptimizerStep):
    """After every optimizer step, move the module's teacher center(s) towards the mean teacher output of
    the step's global batch: ``c <- m c + (1 - m) mean_{global batch} g_t`` (DINO Eq. 4; the official
    ``DINOLoss.update_center``, which sums over the local batch and all-reduces).

    The module accumulates the sums of its teacher outputs over the step's micro-batches
    (``accumulate_center``) and ``update_center`` all-reduces them once per optimizer step, so gradient
    accumulation and any number of ranks give the center of the whole global batch. A step that
    ``NonFiniteLoss`` skipped discards its sums (the weights did not move either).
    """

    def optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.update_center()

    def skipped_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.reset_center_sums()


class FreezeLastLayer(Callback):
    """Keep the head's last layer fixed during the first ``epochs`` epochs (official ``--freeze_last_layer 1``,
    ``utils.cancel_gradients_last_layer``): its gradients are dropped before the optimizer step, so neither
    the update nor the weight decay touches it (AdamW skips parameters without a gradient). The teacher's
    copy still follows the (unchanged) student by EMA. Depends on the epoch only: exact on resume.

    The module lists the parameters in ``last_layer_parameters()``.
    """

    def __init__(self, epochs: int = 1):
        check(isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0, "method.freeze_last_layer_epochs",
              epochs, "an integer >= 0")
        self.epochs = epochs

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.current_epoch < self.epochs:
            for p in pl_module.last_layer_parameters():
                p.grad = None
