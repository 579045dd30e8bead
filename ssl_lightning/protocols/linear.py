"""Linear evaluation: a linear classifier on the frozen backbone's features."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks.knn import progress
from ssl_lightning.config import check
from ssl_lightning.distributed import broadcast_, gather_uneven, world_size
from ssl_lightning.optim import warmup_cosine
from ssl_lightning.protocols.base import Protocol, accuracy, augmentation, check_positive, clean_features, global_count

EpochHook = Callable[[int, float, nn.Module], None]  # (epoch, mean train loss, head)


class LinearProbe(Protocol):
    """A linear classifier trained on the frozen backbone (eval mode, no gradients), top-1 / top-5 on the
    clean validation images (the linear evaluation protocol of SimCLR, Chen et al., 2020, Sec. B.6, and
    MoCo, He et al., 2020). The reported accuracy is the final epoch's, never the best over epochs.

    Two ways of getting training features:

    - ``features=cached`` (default): computed once on clean (centre-cropped, non-augmented) images and kept
      in memory; epochs then cost a matrix product. Trained with mini-batch SGD, or full-batch L-BFGS
      (``optimizer=lbfgs``: L2-regularised multinomial logistic regression, as in CLIP's linear probes).
    - ``features=augmented``: every epoch recomputes them on augmented images (random resized crop + flip,
      ``crop_scale``, ``hflip_prob``), the papers' setting; SGD only. The head is DDP-trained over devices.

    The head is a plain ``Linear`` (weights N(0, 0.01), bias 0). ``bn=true`` puts a
    ``BatchNorm1d(affine=False)`` before it (MAE, He et al., 2022, Sec. A.2: a parameter-free normaliser that
    makes one LR work for any feature scale); on cached features it standardises with the exact mean and
    variance of the training features.

    SGD: momentum, LR = ``lr`` x total batch / 256, cosine decay to 0 over the run, no warmup, weight decay on
    the weight only.

    Args:
        features: ``cached`` or ``augmented``.
        optimizer: ``sgd`` or ``lbfgs`` (cached features only).
        epochs, batch_size: SGD epochs and per-device batch.
        lr, momentum, weight_decay: SGD settings (base LR per 256 images).
        bn: BatchNorm1d without affine before the linear layer.
        crop_scale, hflip_prob: the augmentation of ``features=augmented``.
        lbfgs_max_iter, lbfgs_weight_decay: L-BFGS iterations and L2 coefficient (the loss is the mean
            cross-entropy + ``lbfgs_weight_decay / 2 * ||W||^2``).
        val_every_n_epochs: validation accuracy curve (``linear/val_top1``) every n epochs (0: only at the end).
    """

    name = "linear"

    def __init__(self, features: str = "cached", optimizer: str = "sgd", epochs: int = 100, batch_size: int = 256,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0, bn: bool = False,
                 crop_scale: Sequence[float] = (0.08, 1.0), hflip_prob: float = 0.5, lbfgs_max_iter: int = 1000,
                 lbfgs_weight_decay: float = 1e-4, val_every_n_epochs: int = 1):
        check(features in ("cached", "augmented"), "protocol.features", features, "'cached' or 'augmented'")
        check(optimizer in ("sgd", "lbfgs"), "protocol.optimizer", optimizer, "'sgd' or 'lbfgs'")
        check(not (optimizer == "lbfgs" and features == "augmented"), "protocol.optimizer", optimizer,
              "'sgd' with protocol.features=augmented (L-BFGS is full-batch: it needs cached features)")
        check_positive("protocol.epochs", epochs, integer=True)
        check_positive("protocol.batch_size", batch_size, integer=True)
        check_positive("protocol.lr", lr)
        check_positive("protocol.lbfgs_max_iter", lbfgs_max_iter, integer=True)
        check(0 <= momentum < 1, "protocol.momentum", momentum, "a momentum in [0, 1)")
        check(weight_decay >= 0 and lbfgs_weight_decay >= 0, "protocol.weight_decay", weight_decay, "a value >= 0")
        check(isinstance(val_every_n_epochs, int) and val_every_n_epochs >= 0, "protocol.val_every_n_epochs",
              val_every_n_epochs, "an integer >= 0")
        self.features, self.optimizer, self.epochs, self.batch_size = features, optimizer, epochs, batch_size
        self.lr, self.momentum, self.weight_decay, self.bn = float(lr), momentum, weight_decay, bn
        self.crop_scale, self.hflip_prob = tuple(crop_scale), hflip_prob
        self.lbfgs_max_iter, self.lbfgs_weight_decay = lbfgs_max_iter, lbfgs_weight_decay
        self.val_every_n_epochs = val_every_n_epochs

    # -- the head ---------------------------------------------------------------------------------------

    def make_head(self, num_features: int, num_classes: int) -> nn.Sequential:
        linear = nn.Linear(num_features, num_classes)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        return nn.Sequential(nn.BatchNorm1d(num_features, affine=False), linear) if self.bn else nn.Sequential(linear)

    def sgd(self, head: nn.Sequential, total_batch: int, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        linear = head[-1]
        groups = [{"params": [linear.weight], "weight_decay": self.weight_decay}, {"params": [linear.bias], "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(groups, lr=self.lr * total_batch / 256, momentum=self.momentum)
        return optimizer, warmup_cosine(optimizer, total_steps=steps, steps_per_epoch=1, warmup_epochs=0)

    # -- cached features --------------------------------------------------------------------------------

    def fit_features(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0,
                     on_epoch: EpochHook | None = None, index: torch.Tensor | None = None) -> nn.Sequential:
        """Train the head on fixed features ``x`` (n, D) with labels ``y`` (n,); returns it in eval mode.

        Sharded: on several ranks each holds its rows only, ``index`` (n,) giving each row's index in the
        split. The head then takes exactly the steps one process holding all N rows would take: the same
        seeded permutation of the N rows on every rank, each rank's loss summed over its rows of the batch and
        divided by the batch size, the gradients summed over ranks (the BN statistics and L-BFGS's loss too)."""
        x, y = x.float(), y.long()
        pos, n = _global_positions(index, len(y), x.device)  # (n,) each row's place among the N; N
        head = self.make_head(x.shape[1], num_classes).to(x.device)
        for t in head.state_dict().values():  # the same initial head on every rank
            broadcast_(t)
        if self.bn:  # exact standardisation with the training features' statistics, never updated
            mean = all_reduce_sum_(x.sum(dim=0)) / n
            head[0].running_mean.copy_(mean)
            head[0].running_var.copy_(all_reduce_sum_(((x - mean) ** 2).sum(dim=0)) / n)
        head.eval()  # the BN (if any) uses those fixed statistics; a Linear has no mode
        if self.optimizer == "lbfgs":
            loss = self._fit_lbfgs(head, x, y, n)
            if on_epoch is not None:
                on_epoch(0, loss, head)
            return head
        batch = min(self.batch_size, n)
        per_epoch = -(-n // batch)
        optimizer, scheduler = self.sgd(head, batch, self.epochs * per_epoch)
        owner = torch.full((n,), -1, dtype=torch.long, device=x.device)
        owner[pos] = torch.arange(len(pos), device=x.device)  # global position -> this rank's row, or -1
        g = torch.Generator().manual_seed(seed)
        for epoch in progress(range(self.epochs), "linear probe epochs", self.show_progress):
            order = torch.randperm(n, generator=g).to(x.device)
            total = torch.zeros((), device=x.device)
            for idx in order.split(batch):
                rows = owner[idx]
                rows = rows[rows >= 0]  # this rank's rows of the global batch
                loss_sum = F.cross_entropy(head(x[rows]), y[rows], reduction="sum")
                optimizer.zero_grad(set_to_none=True)
                (loss_sum / len(idx)).backward()
                _sum_grads(head)
                optimizer.step()
                scheduler.step()
                total += loss_sum.detach()
            if on_epoch is not None:
                on_epoch(epoch, all_reduce_sum_(total).item() / n, head)
        return head

    def _fit_lbfgs(self, head: nn.Sequential, x: torch.Tensor, y: torch.Tensor, n: int) -> float:
        """Full-batch L-BFGS over every rank's rows: the loss and gradients are sums over ranks, identical on
        every rank, so every rank's L-BFGS takes the same steps. Returns the final training cross-entropy."""
        linear = head[-1]
        optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=self.lbfgs_max_iter, history_size=20,
                                      tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        penalty_share = 0.5 * self.lbfgs_weight_decay / world_size()  # the ranks' shares sum to the penalty

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(x), y, reduction="sum") / n + penalty_share * linear.weight.pow(2).sum()
            loss.backward()
            _sum_grads(head)
            return all_reduce_sum_(loss.detach())

        optimizer.step(closure)
        with torch.no_grad():
            return all_reduce_sum_(F.cross_entropy(head(x), y, reduction="sum")).item() / n

    # -- protocol ---------------------------------------------------------------------------------------

    def run(self, backbone: nn.Module, datamodule, fabric: L.Fabric, seed: int) -> dict[str, float]:
        """Features stay sharded: each rank holds its N / world size rows of the training and validation
        features (no copy of the whole set per rank); accuracies are reduced over ranks."""
        num_classes = datamodule.num_classes
        show = self.show_progress
        val_x, val_y = clean_features(backbone, datamodule, "val", fabric, show_progress=show)  # frozen backbone: once

        def on_epoch(epoch: int, loss: float, head: nn.Module) -> None:
            metrics = {"linear/train_loss": loss}
            last = epoch + 1 == self.epochs or self.optimizer == "lbfgs"
            if last or (self.val_every_n_epochs and (epoch + 1) % self.val_every_n_epochs == 0):
                head.eval()
                with torch.no_grad():
                    metrics["linear/val_top1"] = accuracy(head(val_x), val_y, num_classes)["top1"]
            fabric.log_dict(metrics, step=epoch + 1)

        if self.features == "cached":
            train_x, train_y, index = clean_features(backbone, datamodule, "bank", fabric, show_progress=show, with_index=True)
            self.train_rows = len(train_y)  # this rank's shard
            head = self.fit_features(train_x, train_y, num_classes, seed, on_epoch, index=index)
            num_train = global_count(len(train_y), fabric.device)
        else:
            head, num_train = self._fit_augmented(backbone, datamodule, fabric, on_epoch)
        head.eval()
        with torch.no_grad():
            metrics = accuracy(head(val_x.float()), val_y, num_classes)
        return {**metrics, "train_images": num_train, "val_images": global_count(len(val_y), fabric.device)}

    def _fit_augmented(self, backbone: nn.Module, datamodule, fabric: L.Fabric, on_epoch: EpochHook) -> tuple[nn.Module, int]:
        loader = datamodule.supervised_dataloader(augmentation(datamodule, self.crop_scale, self.hflip_prob), self.batch_size)
        head = self.make_head(backbone.num_features, datamodule.num_classes)
        optimizer, scheduler = self.sgd(head, self.batch_size * fabric.world_size, self.epochs * len(loader))
        head, optimizer = fabric.setup(head, optimizer)
        backbone.eval()
        for epoch in progress(range(self.epochs), "linear probe epochs", self.show_progress):
            loader.sampler.set_epoch(epoch)
            head.train()
            total, count = 0.0, 0
            for x, y in loader:
                x, y = x.to(fabric.device, non_blocking=True), y.to(fabric.device)
                with torch.no_grad(), fabric.autocast():
                    h = backbone(x)  # (B, D), frozen
                loss = F.cross_entropy(head(h.float()), y, ignore_index=-1)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                scheduler.step()
                total, count = total + loss.item() * len(y), count + len(y)
            on_epoch(epoch, total / max(count, 1), head)
        return head, len(loader.dataset)


def _global_positions(index: torch.Tensor | None, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Each local row's position (n,) among all ranks' rows sorted by split index, and their number N. Without a
    process group the rows are all of them, in order."""
    if world_size() == 1:
        return torch.arange(n, device=device), n
    if index is None:
        raise ValueError("fit_features on several ranks needs each row's split index (index=...)")
    everyone = gather_uneven(index).sort().values  # (N,) the split indices of every rank's rows
    return torch.searchsorted(everyone, index), everyone.numel()


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        torch.distributed.all_reduce(t)
    return t


def _sum_grads(head: nn.Module) -> None:
    """Sum the head's gradients over ranks (one collective: the head is small)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])
