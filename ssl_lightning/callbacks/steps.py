"""The one place that knows when an optimizer step has updated the weights."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class AfterOptimizerStep(Callback):
    """Base for update rules that act once per optimizer step (EMA teachers, queues).

    ``on_train_batch_end`` runs after every batch; an optimizer step happened only when ``global_step`` moved
    (not on gradient-accumulation micro-steps), and it updated the weights only when ``NonFiniteLoss`` did not
    skip it (``pl_module.step_skipped``). Subclasses implement :meth:`optimizer_step`, and may implement
    :meth:`micro_step` (every batch, before the step check) and :meth:`skipped_step`.
    """

    _last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self.micro_step(trainer, pl_module, outputs)
        if trainer.global_step == self._last_step:  # accumulation micro-step: no optimizer step happened
            return
        self._last_step = trainer.global_step
        if getattr(pl_module, "step_skipped", False):  # the optimizer step was skipped (non-finite loss)
            self.skipped_step(trainer, pl_module)
        else:
            self.optimizer_step(trainer, pl_module)

    def micro_step(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs) -> None:
        """Every training batch, accumulation micro-steps included."""

    def optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def skipped_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """An optimizer step that ``NonFiniteLoss`` skipped: the weights did not move."""


def host_scalar(value: float) -> torch.Tensor:
    """A Python number to log per step (an LR, a schedule's value, a count), as a host tensor: ``self.log`` of a
    float makes a device tensor from it, a blocking host-to-device copy in every step; a host tensor stays on the
    host (Lightning keeps a logged value on its own device), so the step queues no copy."""
    return torch.tensor(float(value), dtype=torch.float32)
