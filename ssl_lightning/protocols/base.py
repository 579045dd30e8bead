"""What every evaluation protocol shares: clean features, labelled subsets, top-k accuracy, the augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.callbacks.knn import extract_features
from ssl_lightning.config import check
from ssl_lightning.transforms import ViewSpec, view_pipeline


class Protocol:
    """An evaluation protocol: ``run(backbone, datamodule, fabric, seed)`` returns ``{"top1", "top5", ...}``.

    Subclasses validate their settings in the constructor (``conf/protocol/<name>.yaml`` holds the defaults)
    and log curves with ``fabric.log_dict`` under ``<name>/``.
    """

    name = ""

    def run(self, backbone: nn.Module, datamodule, fabric: L.Fabric, seed: int) -> dict[str, float]:
        raise NotImplementedError


def clean_features(backbone: nn.Module, datamodule, split: str, fabric: L.Fabric) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (N, D) and labels (N,) of the non-augmented ``bank`` or ``val`` split, in eval mode,
    computed sharded over ranks and gathered (every rank gets all of them); unlabelled (-1) rows dropped."""
    with fabric.autocast():
        x, y = extract_features(backbone, datamodule.eval_dataloader(split), fabric.device)
    keep = y >= 0
    return x[keep], y[keep]


def top_k(num_classes: int) -> tuple[int, int]:
    """(1, 5), or (1, C) when there are fewer than 5 classes."""
    return 1, min(5, num_classes)


def accuracy_metrics(num_classes: int, device: torch.device, sync: bool) -> dict[str, MulticlassAccuracy]:
    """torchmetrics top-1 and top-5 accuracy (micro: the fraction of correct images), in percent after x100.

    ``sync`` reduces the counts over ranks on ``compute()`` (sharded inputs); features that every rank
    already holds in full are evaluated without it."""
    k1, k5 = top_k(num_classes)
    return {name: MulticlassAccuracy(num_classes, top_k=k, average="micro", sync_on_compute=sync).to(device)
            for name, k in (("top1", k1), ("top5", k5))}


def accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) of full (already gathered) logits (N, C)."""
    metrics = accuracy_metrics(num_classes, logits.device, sync=False)
    return {name: 100.0 * m(logits, labels).item() for name, m in metrics.items()}


def augmentation(datamodule, crop_scale: Sequence[float], hflip_prob: float):
    """The supervised training augmentation: random resized crop and horizontal flip (the standard
    linear-evaluation augmentation of SimCLR, MoCo and MAE), at the data's image size and normalisation.
    The data's own ``crop_scale`` / ``hflip_prob`` (``data.augment``, e.g. no flips for digits) win."""
    imposed = {k: v for k, v in datamodule.augment.items() if k in ("crop_scale", "hflip_prob")}
    crop_scale = tuple(imposed.get("crop_scale", crop_scale))
    hflip_prob = imposed.get("hflip_prob", hflip_prob)
    spec = ViewSpec(size=datamodule.image_size, crop_scale=crop_scale, hflip_prob=hflip_prob, jitter_prob=0.0,
                    grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    return view_pipeline(spec, datamodule.mean, datamodule.std)


def check_positive(key: str, value, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    check(ok and value > 0, key, value, "an integer >= 1" if integer else "a number > 0")

