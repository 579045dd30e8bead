"""What happens when the loss becomes NaN or infinite."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from ssl_lightning.callbacks.agreed_flag import AgreedFlag
from ssl_lightning.callbacks.steps import host_scalar, log_step
from ssl_lightning.config import check


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/Inf loss; the message names the step and the last good checkpoint."""


class NonFiniteLoss(Callback):
    """Stop (default) or skip optimizer steps whose loss is NaN or infinite, decided for all ranks at once.

    Under DDP a non-finite loss on one rank is a fault of every rank: its gradients enter everyone's
    average. Deciding per rank either lets the ranks with a finite loss apply the poisoned average while the
    NaN rank skips (the replicas silently diverge), or makes one rank raise while the others wait for it in
    the next collective until the timeout. Here every rank contributes its flag to one all-reduce (MAX) at
    the same point of every step (:class:`~ssl_lightning.callbacks.agreed_flag.AgreedFlag`), and all act on
    the result.

    - ``mode="stop"``: raises :class:`NonFiniteLossError` on every rank at the same step, naming the step
      and the last good checkpoint; nothing is saved after the bad step, so that checkpoint stays the
      newest. The flag of step S is reduced on the device in step S and read on the host at the end of
      step S + 1 (on CUDA an asynchronous copy to pinned memory), or before the epoch's checkpoint is
      written: no host-device synchronisation in the step.
    - ``mode="skip"``: the optimizer step of a non-finite loss on any rank is skipped on every rank (every
      gradient is dropped, so SGD, LARS and AdamW leave parameters and their state untouched, step counters
      included; ``pl_module.step_skipped`` tells the EMA / queue callbacks to skip their updates too), skips
      are counted and logged as ``train/skipped_steps``. This reads the reduced flag on the host once per
      optimizer step (one synchronisation), because everything a skip must leave untouched is then skipped
      exactly: the optimizer's CPU-side step counters (AdamW's ``step``), the EMA teachers and the queues.
      Doing it on the device instead would need a copy of every parameter and optimizer state per step to
      restore with ``torch.where`` and masked EMA / queue updates; skip is the opt-in mode for unstable
      runs, so it keeps the one synchronisation.
    """

    def __init__(self, mode: str = "stop", checkpoint_dir: str | None = None):
        check(mode in ("stop", "skip"), "callbacks.nonfinite.mode", mode, "'stop' or 'skip'")
        self.mode = mode
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.skipped = 0
        self._loss: torch.Tensor | None = None
        self._step = 0
        self._agreed = AgreedFlag()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        pl_module.step_skipped = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()
        self._step = trainer.global_step  # the index of the optimizer step this loss belongs to

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self.mode != "skip" or self._loss is None:
            return
        self._agreed.post(~torch.isfinite(self._loss))  # every rank, every optimizer step
        bad, _ = self._agreed.take()  # the one host synchronisation of skip mode
        if not bad:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        pl_module.step_skipped = True
        rank_zero_warn(f"non-finite loss at step {self._step} (here {self._loss.item()}; any rank counts): "
                       f"optimizer step skipped on every rank ({self.skipped} so far)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.mode == "skip":
            log_step(trainer, pl_module, "train/skipped_steps", host_scalar(self.skipped))
            return
        if self._loss is None:
            return
        self._check_pending(trainer)  # the previous step's flag
        self._agreed.post(~torch.isfinite(self._loss), (self._loss, self._step, trainer.current_epoch))
        if not self._loss.is_cuda:  # on the CPU the reduced value is there already
            self._check_pending(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer)  # before the epoch's checkpoint is written (checkpointing runs last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer)

    def _check_pending(self, trainer: L.Trainer) -> None:
        taken = self._agreed.take()
        if taken is None or not taken[0]:
            return
        loss, step, epoch = taken[1]
        value = loss.item() if not torch.isfinite(loss) else f"non-finite on another rank (here {loss.item():.4g})"
        raise NonFiniteLossError(
            f"the loss became {value} at step {step} (epoch {epoch}); training stopped. "
            f"Last good checkpoint: {self._last_good(trainer)}. Lower method.optimizer.lr, check the data, "
            "or set callbacks.nonfinite.mode=skip to skip such steps."
        )

    def _last_good(self, trainer: L.Trainer) -> str:
        directory = self.checkpoint_dir or (Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None)
        last = directory / "last.ckpt" if directory else None
        if last is not None and last.exists():
            return f"{last.resolve()} (resume with resume=auto)"
        return "none (no checkpoint was written yet)"
