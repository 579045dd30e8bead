"""What every evaluation protocol shares: clean features, labelled subsets, top-k accuracy, the augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.callbacks.knn import extract_features, topk_hits
from ssl_lightning.config import check
from ssl_lightning.distributed import world_size
from ssl_lightning.transforms import ViewSpec, view_pipeline


class Protocol:
    """An evaluation protocol: ``run(backbone, datamodule, fabric, seed)`` returns ``{"top1", "top5", ...}``.

    Subclasses validate their settings in the constructor (``conf/protocol/<name>.yaml`` holds the defaults)
    and log curves with ``fabric.log_dict`` under ``<name>/``.
    """

    name = ""
    #: progress bars (feature extraction, training epochs) on rank 0; eval sets it from ``enable_progress_bar``
    show_progress: bool = False

    def run(self, backbone: nn.Module, datamodule, fabric: L.Fabric, seed: int) -> dict[str, float]:
        raise NotImplementedError


def clean_features(backbone: nn.Module, datamodule, split: str, fabric: L.Fabric, normalize: bool = False,
                   dtype: torch.dtype = torch.float32, show_progress: bool = False,
                   with_index: bool = False) -> tuple[torch.Tensor, ...]:
    """This rank's shard of the backbone features (n, D) and labels (n,) of the non-augmented ``bank`` or ``val``
    split (about N / world size rows; never gathered), in eval mode under Fabric's precision, L2-normalised
    and cast to ``dtype`` batch by batch; unlabelled (-1) rows dropped. ``with_index`` adds each row's index
    in the split (n,), from the loader's sampler."""
    loader = datamodule.eval_dataloader(split)
    x, y = extract_features(backbone, loader, fabric.device, normalize=normalize, dtype=dtype,
                            autocast=fabric.autocast, desc=f"{split} features", show_progress=show_progress)
    keep = y >= 0
    if not with_index:
        return x[keep], y[keep]
    index = torch.tensor(list(loader.sampler), dtype=torch.long, device=y.device)
    return x[keep], y[keep], index[keep]


def global_count(n: int, device: torch.device) -> int:
    """The sum of ``n`` over ranks."""
    t = torch.tensor([n], device=device)
    if world_size() > 1:
        torch.distributed.all_reduce(t)
    return int(t.item())


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
    """Top-1 / top-5 accuracy (percent) over every rank's logits (n, C) and labels (n,) (one all-reduce of the
    counts; on one process, of the logits given)."""
    k1, k5 = top_k(num_classes)
    acc = topk_hits(logits, labels, (k1, k5))
    return {"top1": acc[k1], "top5": acc[k5]}


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

