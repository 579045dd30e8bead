"""Weighted k-nearest-neighbour classification of frozen features (Wu et al., 2018, Sec. 3.4)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks.knn import bank_dtype, knn_scores, topk_hits
from ssl_lightning.protocols.base import Protocol, check_positive, clean_features, global_count, top_k


class KNN(Protocol):
    """Each validation image is classified by its k most cosine-similar labelled training images, each voting
    ``exp(sim / T)`` for its class (Wu et al., 2018; the protocol of InstDisc, DINO and solo-learn's online kNN).
    Features are the backbone's, on clean images, in eval mode; no training. On several devices each rank
    keeps its shard of the bank (bf16) and only each query's top-k candidates are exchanged
    (:func:`~ssl_lightning.callbacks.knn.knn_scores`): the same predictions as one process.

    Args:
        k: neighbours (200, Wu et al., 2018; DINO uses 20 on ImageNet).
        temperature: vote temperature T (0.1; DINO 0.07).
    """

    name = "knn"

    def __init__(self, k: int = 200, temperature: float = 0.1):
        check_positive("protocol.k", k, integer=True)
        check_positive("protocol.temperature", temperature)
        self.k, self.temperature = k, float(temperature)

    def evaluate_features(self, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                          num_classes: int) -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) of the weighted kNN vote: this rank's shards of the bank (n, D) with
        labels (n,) and of the queries (m, D) (on one process, the whole of each)."""
        bank = F.normalize(train_x.float(), dim=1).to(bank_dtype(train_x.device))
        scores = knn_scores(val_x, bank, train_y, num_classes, self.k, self.temperature)  # (m, C)
        acc = topk_hits(scores, val_y, top_k(num_classes))
        k1, k5 = top_k(num_classes)
        return {"top1": acc[k1], "top5": acc[k5]}

    def run(self, backbone: nn.Module, datamodule, fabric: L.Fabric, seed: int) -> dict[str, float]:
        dtype, show = bank_dtype(fabric.device), self.show_progress
        train_x, train_y = clean_features(backbone, datamodule, "bank", fabric, normalize=True, dtype=dtype, show_progress=show)
        val_x, val_y = clean_features(backbone, datamodule, "val", fabric, show_progress=show)
        self.bank_rows = len(train_y)  # this rank's shard
        metrics = self.evaluate_features(train_x, train_y, val_x, val_y, datamodule.num_classes)
        return {**metrics, "train_images": global_count(len(train_y), fabric.device),
                "val_images": global_count(len(val_y), fabric.device)}
