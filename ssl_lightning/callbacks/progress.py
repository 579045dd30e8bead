"""The training progress bar: loss, learning rate and throughput, refreshed every ``refresh_rate`` steps."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with the learning rate and images/s (tokens/s for text) next to the loss.

    Both are host-side numbers: the LR is the optimizer's Python float, the rate is the batch size of every rank
    over the wall time between batch ends, so the bar adds no device synchronisation. (The loss shown is
    Lightning's, read at each refresh: on a GPU keep ``refresh_rate`` at tens of steps.)

    Args:
        refresh_rate: update the bar every this many batches.
    """

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self._last: float | None = None
        self._rate: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last = None  # the pause between epochs (validation, checkpoints) is not training time

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            rate = self._items_per_batch(trainer) / max(now - self._last, 1e-9)
            self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        self._last = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @staticmethod
    def _items_per_batch(trainer: L.Trainer) -> int:
        datamodule = trainer.datamodule
        per_device = getattr(datamodule, "batch_size", 0) or 0
        return per_device * getattr(datamodule, "block_size", 1) * trainer.world_size

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if trainer.optimizers:
            items["lr"] = f"{trainer.optimizers[0].param_groups[0]['lr']:.3g}"
        if self._rate is not None and trainer.training:
            unit = "tok/s" if getattr(trainer.datamodule, "block_size", None) else "img/s"
            items[unit] = f"{self._rate:,.0f}"
        return items
