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


def step_logged(trainer: L.Trainer, prog_bar: bool = False) -> bool:
    """Whether a per-step value (``on_step=True, on_epoch=False``) logged in the current training batch is read:
    a logger writes this step (every ``trainer.log_every_n_steps``, as Lightning decides), it is the epoch's
    last batch or the run's last step (so ``callback_metrics`` and the run's final metrics end current), or,
    for a ``prog_bar`` value, the progress bar refreshes after this batch.

    Lightning's ``self.log`` costs about 0.2 ms of host time per call whether or not the value is ever written
    (``_ResultMetric.to`` walks the metric's attributes on every call; ``python -m ssl_lightning.bench logging``
    measures it), so the dozen per-step values DINO logs cost 2.5 ms a step; logging them only on these steps
    keeps what every logger and the bar show. The decision depends only on step counts, the same on every rank.
    Outside a fit loop (or on a Lightning without these attributes) every value is logged."""
    try:
        if trainer.fast_dev_run or trainer._logger_connector.should_update_logs:
            return True
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if (progress.is_last_batch or progress.current.ready >= trainer.num_training_batches
                or 0 < trainer.max_steps <= trainer.global_step + 1):
            return True
        bar = trainer.progress_bar_callback
        return bool(prog_bar and bar is not None and bar.is_enabled
                    and progress.current.ready % max(1, int(getattr(bar, "refresh_rate", 1))) == 0)
    except (AttributeError, RuntimeError, NotImplementedError):
        return True


def log_step(trainer: L.Trainer, module: L.LightningModule, name: str, value, prog_bar: bool = False) -> None:
    """``module.log(name, value)`` as a per-step value, on the steps where :func:`step_logged` says it is read;
    what methods (``SSLMethod.log_step``) and callbacks log every step goes through here."""
    if step_logged(trainer, prog_bar):
        module.log(name, value, on_step=True, on_epoch=False, prog_bar=prog_bar)
