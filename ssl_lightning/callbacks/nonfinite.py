"""What happens when the loss becomes NaN or infinite."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from ssl_lightning.config import check


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/Inf loss; the message names the step and the last good checkpoint."""


class NonFiniteLoss(Callback):
    """Stop (default) or skip optimizer steps whose loss is NaN or infinite.

    - ``mode="stop"``: raises :class:`NonFiniteLossError` naming the step and the last good checkpoint;
      nothing is saved after the bad step, so that checkpoint stays the newest. The check reads the flag of
      a step one step later (an asynchronous copy), so it adds no host-device synchronisation to the step.
    - ``mode="skip"``: the optimizer step of a non-finite loss is skipped (every gradient is dropped, so SGD,
      LARS and AdamW leave parameters and their state untouched; ``pl_module.step_skipped`` tells the
      EMA / queue callbacks to skip their updates too), skips are counted and logged as
      ``train/skipped_steps``. This reads the loss on the host every step (one synchronisation).
    """

    def __init__(self, mode: str = "stop", checkpoint_dir: str | None = None):
        check(mode in ("stop", "skip"), "callbacks.nonfinite.mode", mode, "'stop' or 'skip'")
        self.mode = mode
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.skipped = 0
        self._loss: torch.Tensor | None = None
        self._step = 0
        self._pending: tuple[torch.Tensor, torch.Tensor, object, int, int] | None = None  # (flag, loss, event, step, epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        pl_module.step_skipped = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()
        self._step = trainer.global_step  # the index of the optimizer step this loss belongs to

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self.mode != "skip" or self._loss is None or bool(torch.isfinite(self._loss)):
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        pl_module.step_skipped = True
        rank_zero_warn(f"non-finite loss ({self._loss.item()}) at step {self._step}: optimizer step skipped "
                       f"({self.skipped} so far)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.mode == "skip":
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
            return
        if self._loss is None:
            return
        self._check_pending(trainer)
        flag = torch.isfinite(self._loss)
        if flag.is_cuda:  # copy asynchronously; read it at the next step
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host, self._loss, event, self._step, trainer.current_epoch)
        else:
            self._pending = (flag, self._loss, None, self._step, trainer.current_epoch)
            self._check_pending(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer)  # before the epoch's checkpoint is written (checkpointing runs last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer)

    def _check_pending(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        flag, loss, event, step, epoch = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        if bool(flag):
            return
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at step {step} (epoch {epoch}); training stopped. "
            f"Last good checkpoint: {self._last_good(trainer)}. Lower method.optimizer.lr, check the data, "
            "or set callbacks.nonfinite.mode=skip to skip such steps."
        )

    def _last_good(self, trainer: L.Trainer) -> str:
        directory = self.checkpoint_dir or (Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else None)
        last = directory / "last.ckpt" if directory else None
        if last is not None and last.exists():
            return f"{last.resolve()} (resume with resume=auto)"
        return "none (no checkpoint was written yet)"
