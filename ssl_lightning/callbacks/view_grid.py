"""A TensorBoard grid of the augmented views of the first training batch."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torchvision.utils import make_grid

from ssl_lightning.callbacks.images import image_loggers, log_image


class ViewGrid(Callback):
    """At the first training step, logs ``train/views``: one row per view, ``num_images`` images per row,
    un-normalised with the datamodule's mean and std (multi-crop views are resized to the largest crop).
    Jigsaw batches (a dict with ``tiles``) show each puzzle as the network sees it: tiles in puzzle order,
    each rescaled to its own range (they are normalised per tile)."""

    def __init__(self, num_images: int = 8):
        self.num_images = num_images

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step != 0 or batch_idx != 0 or not trainer.is_global_zero:
            return
        loggers = image_loggers(trainer)
        views = batch[0]
        if loggers and isinstance(views, dict) and "tiles" in views:
            grid = self.puzzles(views["tiles"][: self.num_images].detach().float().cpu())
            for logger in loggers:
                log_image(logger, "train/views", grid, 0)
            return
        if not loggers or not isinstance(views, (list, tuple)):
            return
        views = [v for v in views if v.ndim == 4]  # masked-image batches also carry (B, N) patch masks
        if not views:
            return
        dm = trainer.datamodule
        mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
        std = torch.tensor(dm.std).view(1, 3, 1, 1)
        size = max(v.shape[-1] for v in views)
        rows = []
        for v in views:
            v = v[: self.num_images].detach().float().cpu() * std + mean
            rows.append(F.interpolate(v, size=(size, size), mode="nearest") if v.shape[-1] != size else v)
        grid = make_grid(torch.cat(rows).clamp(0, 1), nrow=min(self.num_images, len(rows[0])))
        for logger in loggers:
            log_image(logger, "train/views", grid, 0)

    @staticmethod
    def puzzles(tiles: torch.Tensor) -> torch.Tensor:
        """(B, n, 3, t, t) tiles in puzzle order -> one image of the B puzzles, tiles separated by gaps."""
        lo = tiles.amin(dim=(-3, -2, -1), keepdim=True)
        hi = tiles.amax(dim=(-3, -2, -1), keepdim=True)
        tiles = (tiles - lo) / (hi - lo).clamp_min(1e-6)
        side = round(tiles.shape[1] ** 0.5)
        boards = [make_grid(t, nrow=side, padding=1, pad_value=1.0) for t in tiles]
        return make_grid(torch.stack(boards), nrow=len(boards), padding=2)
