"""Online linear probe: a linear classifier trained on detached backbone features during pretraining."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from ssl_lightning.config import check
from ssl_lightning.distributed import world_size


class OnlineLinearProbe(Callback):
    """Trains ``BatchNorm1d(affine=False) -> Linear`` on the detached features ``outputs["h"]`` that each
    training step returns (first view), with its own SGD; never touches the backbone's gradients. The
    parameter-free BN makes one learning rate work for every backbone's feature scale (MAE, He et al., 2022,
    linear probing). Reports ``val/linear_top1`` on the clean validation split.

    Under DDP the probe's gradients are averaged over ranks, so every rank holds the same probe. Its weights
    and optimizer state are saved in the checkpoint through this callback's ``state_dict``.
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0):
        check(lr > 0, "callbacks.linear_probe.lr", lr, "a learning rate > 0")
        check(0 <= momentum < 1, "callbacks.linear_probe.momentum", momentum, "a momentum in [0, 1)")
        check(weight_decay >= 0, "callbacks.linear_probe.weight_decay", weight_decay, "a value >= 0")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.probe: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._restored: dict | None = None  # state from a checkpoint, applied once the probe exists
        self._correct = self._total = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.probe is None:
            num_features = pl_module.backbone.num_features
            self.probe = nn.Sequential(nn.BatchNorm1d(num_features, affine=False), nn.Linear(num_features, trainer.datamodule.num_classes))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.probe.to(pl_module.device)
        self.optimizer = torch.optim.SGD(self.probe.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self._restored is not None:
            self.probe.load_state_dict(self._restored["probe"])
            self.optimizer.load_state_dict(self._restored["optimizer"])
            self._restored = None
        elif world_size() > 1:  # same initial probe on every rank
            for t in self.probe.state_dict().values():
                torch.distributed.broadcast(t, src=0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        h, y = outputs["h"].detach().float(), batch[-1]
        self.probe.train()
        with torch.enable_grad():
            loss = F.cross_entropy(self.probe(h), y, ignore_index=-1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if world_size() > 1:
            for p in self.probe.parameters():  # a weight and a bias: two small all_reduces
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world_size())
        self.optimizer.step()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._correct = torch.zeros((), device=pl_module.device)
        self._total = torch.zeros((), device=pl_module.device)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.probe.eval()
        with torch.no_grad():
            pred = self.probe(outputs["h"].float()).argmax(dim=1)
        self._correct += (pred == outputs["y"]).sum()
        self._total += outputs["y"].numel()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = torch.stack([self._correct, self._total])
        if world_size() > 1:
            torch.distributed.all_reduce(counts)
        pl_module.log("val/linear_top1", 100.0 * counts[0] / counts[1].clamp(min=1))

    def state_dict(self) -> dict:
        if self.optimizer is None:
            return {}
        return {"probe": self.probe.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict or None
