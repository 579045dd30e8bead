"""Online weighted kNN evaluation on backbone features."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ssl_lightning.config import check
from ssl_lightning.distributed import gather_uneven


@torch.no_grad()
def knn_predict(
    features: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (N, C) by the weighted vote of the k most cosine-similar bank entries, each voting
    ``exp(sim / T)`` for its label (Wu et al., 2018, Sec. 3.4)."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for chunk in F.normalize(features.float(), dim=1).split(chunk_size):
        sim, idx = (chunk @ bank.T).topk(k, dim=1)  # (n, k)
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        scores.append(votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp()))
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the ``k`` highest scores."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a (sharded) loader, gathered from all ranks: ((N, D), (N,))."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for x, y in loader:
        feats.append(model(x.to(device, non_blocking=True)).float())
        labels.append(y.to(device))
    model.train(was_training)
    return gather_uneven(torch.cat(feats)), gather_uneven(torch.cat(labels))


class KNNEval(Callback):
    """Weighted kNN accuracy of the backbone's features, each validation epoch and once before training.

    The bank is the clean (non-augmented) labelled training split, queries the validation split; both are
    encoded with the backbone in eval mode (``pl_module(x)``). Logs ``val/knn_top1`` and ``val/knn_top5``;
    the random-init value is logged at step 0.

    Args:
        k: neighbours (200, Wu et al., 2018).
        temperature: vote temperature (0.1).
        every_n_epochs: evaluate on every n-th validation epoch.
    """

    def __init__(self, k: int = 200, temperature: float = 0.1, every_n_epochs: int = 1):
        check(isinstance(k, int) and k >= 1, "callbacks.knn.k", k, "an integer >= 1")
        check(temperature > 0, "callbacks.knn.temperature", temperature, "a float > 0")
        check(isinstance(every_n_epochs, int) and every_n_epochs >= 1, "callbacks.knn.every_n_epochs", every_n_epochs, "an integer >= 1")
        self.k, self.temperature, self.every_n_epochs = k, temperature, every_n_epochs
        self.history: list[tuple[int, float]] = []  # (global step, top-1)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[int, float]:
        dm = trainer.datamodule
        bank, bank_labels = extract_features(pl_module, dm.eval_dataloader("bank"), pl_module.device)
        query, query_labels = extract_features(pl_module, dm.eval_dataloader("val"), pl_module.device)
        labelled = bank_labels >= 0
        scores = knn_predict(query, bank[labelled], bank_labels[labelled], dm.num_classes, self.k, self.temperature)
        return topk_accuracy(scores, query_labels)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0 or self.history:  # resumed: the baseline was logged by the first run
            return
        acc = self.evaluate(trainer, pl_module)
        self.history.append((0, acc[1]))
        for logger in trainer.loggers:
            logger.log_metrics({"val/knn_top1": acc[1], "val/knn_top5": acc[5]}, step=0)
        rank_zero_info(f"kNN top-1 at initialisation: {acc[1]:.2f}%")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        acc = self.evaluate(trainer, pl_module)
        self.history.append((trainer.global_step, acc[1]))
        pl_module.log("val/knn_top1", acc[1])
        pl_module.log("val/knn_top5", acc[5])

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [tuple(h) for h in state_dict.get("history", [])]
