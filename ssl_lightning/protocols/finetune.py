"""End-to-end fine-tuning of the whole network with a linear head, layer-wise LR decay for ViTs."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.backbones import VisionTransformer
from ssl_lightning.config import check
from ssl_lightning.optim import warmup_cosine
from ssl_lightning.callbacks.knn import progress
from ssl_lightning.protocols.base import Protocol, accuracy_metrics, augmentation, check_positive


class Classifier(nn.Module):
    """``head(backbone(x))``: (B, 3, H, W) -> (B, C)."""

    def __init__(self, backbone: nn.Module, num_classes: int, init_std: float = 2e-5):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=init_std)  # MAE's fine-tuning head: starts near zero
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def vit_layer_id(name: str, depth: int) -> int:
    """Depth of a ViT parameter for layer-wise LR decay (BEiT, Bao et al., 2022): patch embedding and [CLS]
    token 0, block i i+1, the final norm and the head depth+1."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(model: Classifier, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups: no weight decay on biases, norms and tokens; for a ViT backbone the LR of
    layer i is ``lr * layer_decay ** (depth + 1 - i)`` (BEiT, Bao et al., 2022, Sec. 2.6; MAE, He et al.,
    2022, Sec. A.1), so the head and last norm train at ``lr`` and the patch embedding at
    ``lr * layer_decay ** (depth + 1)``. Other backbones get one LR (``layer_decay`` does not apply).
    Each group carries its ``lr_scale``."""
    backbone = model.backbone
    vit = isinstance(backbone, VisionTransformer)
    depth = len(backbone.blocks) if vit else 0
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        inner = name.removeprefix("backbone.")
        layer = vit_layer_id(inner, depth) if vit and name.startswith("backbone.") else depth + 1
        decay = p.ndim > 1 and not (name.startswith("backbone.") and inner in skip)
        scale = layer_decay ** (depth + 1 - layer) if vit else 1.0
        group = groups.setdefault((layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                   "lr": lr * scale, "lr_scale": scale, "layer_id": layer})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def set_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth of a ViT's blocks, rising linearly from 0 to ``rate`` (as when it is built)."""
    if isinstance(backbone, VisionTransformer):
        for r, block in zip(torch.linspace(0, rate, len(backbone.blocks)).tolist(), backbone.blocks):
            block.drop_path = r


class FineTune(Protocol):
    """Fine-tune the whole network (backbone + a new linear head) on the labelled training images with
    augmentation; top-1 / top-5 of the final epoch on the clean validation images.

    Defaults follow MAE's end-to-end fine-tuning (He et al., 2022, Table 9) where they apply at small scale:
    AdamW (0.9, 0.999), base LR 5e-4 x total batch / 256, weight decay 0.05, layer-wise LR decay 0.75 (ViT
    only; MAE uses 0.65 for ViT-B, 0.75 for ViT-L; BEiT 0.65-0.9), 5 warmup epochs then cosine, label
    smoothing 0.1, drop path 0.1 (ViT), head initialised near zero. Not included: mixup, cutmix, RandAugment
    and random erasing; the augmentation is random resized crop + flip. ResNets are fine-tuned with the same
    optimizer and one LR (BatchNorm in training mode).

    Args:
        epochs, batch_size: training length and per-device batch.
        lr: base LR per 256 images.
        weight_decay, layer_decay, warmup_epochs, label_smoothing, drop_path: as above.
        crop_scale, hflip_prob: the augmentation.
        val_every_n_epochs: validation accuracy curve (``finetune/val_top1``) every n epochs (0: at the end).
    """

    name = "finetune"

    def __init__(self, epochs: int = 100, batch_size: int = 128, lr: float = 5e-4, weight_decay: float = 0.05,
                 layer_decay: float = 0.75, warmup_epochs: float = 5, label_smoothing: float = 0.1,
                 drop_path: float = 0.1, crop_scale: Sequence[float] = (0.08, 1.0), hflip_prob: float = 0.5,
                 val_every_n_epochs: int = 1):
        check_positive("protocol.epochs", epochs, integer=True)
        check_positive("protocol.batch_size", batch_size, integer=True)
        check_positive("protocol.lr", lr)
        check(0 < layer_decay <= 1, "protocol.layer_decay", layer_decay, "a factor in (0, 1] (1: no decay)")
        check(weight_decay >= 0, "protocol.weight_decay", weight_decay, "a value >= 0")
        check(warmup_epochs >= 0, "protocol.warmup_epochs", warmup_epochs, "a number of epochs >= 0")
        check(0 <= label_smoothing < 1, "protocol.label_smoothing", label_smoothing, "a value in [0, 1)")
        check(0 <= drop_path < 1, "protocol.drop_path", drop_path, "a rate in [0, 1)")
        check(isinstance(val_every_n_epochs, int) and val_every_n_epochs >= 0, "protocol.val_every_n_epochs",
              val_every_n_epochs, "an integer >= 0")
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, float(lr), weight_decay
        self.layer_decay, self.warmup_epochs, self.label_smoothing = layer_decay, warmup_epochs, label_smoothing
        self.drop_path, self.crop_scale, self.hflip_prob = drop_path, tuple(crop_scale), hflip_prob
        self.val_every_n_epochs = val_every_n_epochs

    @torch.no_grad()
    def validate(self, model: nn.Module, datamodule, fabric: L.Fabric) -> dict[str, float]:
        """Top-1 / top-5 (percent) on the clean validation split, sharded over ranks and reduced."""
        metrics = accuracy_metrics(datamodule.num_classes, fabric.device, sync=True)
        model.eval()
        for x, y in datamodule.eval_dataloader("val"):
            x, y = x.to(fabric.device, non_blocking=True), y.to(fabric.device)
            with fabric.autocast():
                logits = model(x).float()
            keep = y >= 0
            for m in metrics.values():
                m.update(logits[keep], y[keep])
        return {name: 100.0 * m.compute().item() for name, m in metrics.items()}

    def run(self, backbone: nn.Module, datamodule, fabric: L.Fabric, seed: int) -> dict[str, float]:
        set_drop_path(backbone, self.drop_path)
        model = Classifier(backbone, datamodule.num_classes)
        loader = datamodule.supervised_dataloader(augmentation(datamodule, self.crop_scale, self.hflip_prob), self.batch_size)
        lr = self.lr * self.batch_size * fabric.world_size / 256
        optimizer = torch.optim.AdamW(layer_decay_groups(model, lr, self.weight_decay, self.layer_decay), lr=lr, betas=(0.9, 0.999))
        scheduler = warmup_cosine(optimizer, total_steps=self.epochs * len(loader), steps_per_epoch=len(loader),
                                  warmup_epochs=self.warmup_epochs)
        model, optimizer = fabric.setup(model, optimizer)
        for epoch in range(self.epochs):
            loader.sampler.set_epoch(epoch)
            model.train()
            total, count = 0.0, 0
            for x, y in progress(loader, f"finetune epoch {epoch + 1}/{self.epochs}", self.show_progress):
                x, y = x.to(fabric.device, non_blocking=True), y.to(fabric.device)
                with fabric.autocast():
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, ignore_index=-1, label_smoothing=self.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                fabric.backward(loss)
                optimizer.step()
                scheduler.step()
                total, count = total + loss.item() * len(y), count + len(y)
            log = {"finetune/train_loss": total / max(count, 1), "finetune/lr": optimizer.param_groups[-1]["lr"]}
            last = epoch + 1 == self.epochs
            if last or (self.val_every_n_epochs and (epoch + 1) % self.val_every_n_epochs == 0):
                result = self.validate(model, datamodule, fabric)
                log["finetune/val_top1"] = result["top1"]
            fabric.log_dict(log, step=epoch + 1)
        return {**result, "train_images": len(loader.dataset), "val_images": len(datamodule.split("val"))}
