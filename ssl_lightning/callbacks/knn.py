"""Online weighted kNN evaluation on backbone features, with the feature bank sharded over ranks.

Each rank keeps only its own shard of the bank (the rows of the clean training split its eval loader gives
it), L2-normalised and stored in bf16 (fp16 on CUDA devices without bf16): ImageNet's 1.28M x 2048 bank is
5.2 GB in bf16 in total, 0.66 GB per GPU on 8 GPUs, where gathering it to every rank in fp32 took 10.5 GB per
GPU. Every rank scores all queries (gathered, in the storage dtype; the validation split is ~25x smaller)
against its shard in fp32, keeps each query's top-k (similarity, label), and only those are all-gathered and
merged: the k most similar entries of the union of the shards are the k most similar of the whole bank, so
predictions equal those of one process holding the whole bank (up to exact ties). Features are extracted under
the trainer's precision (autocast), in eval mode, with a progress bar on rank 0 (the initial kNN of a run can
take minutes on a CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from tqdm.auto import tqdm

from ssl_lightning.config import check
from ssl_lightning.distributed import gather_no_grad, gather_uneven, rank, world_size


def bank_dtype(device: torch.device) -> torch.dtype:
    """Storage dtype of feature banks: bf16, or fp16 on a CUDA device without bf16 (pre-Ampere)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def progress(iterable: Iterable, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar over ``iterable`` on global rank 0 when ``enabled`` (off in tests and for non-zero ranks)."""
    if not enabled or rank() != 0:
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader, device: torch.device, *, normalize: bool = False,
                     dtype: torch.dtype = torch.float32, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     desc: str = "features", show_progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's features and labels of a (sharded) loader: ((n, D) in ``dtype``, (n,)), not gathered.

    The model runs in eval mode under ``autocast()`` (the trainer's or Fabric's precision); each batch's
    features are L2-normalised in fp32 when ``normalize`` and cast to ``dtype`` before being kept, so the
    shard never exists in fp32 when a smaller storage dtype is asked for.

    The host's (and ``device``'s) random generator is left as it was: iterating a loader draws its workers' base
    seed from it (twice behind a tqdm bar), and training must not draw differently because an evaluation ran,
    or ran with a progress bar (the drop path of the next steps would)."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        for x, y in progress(loader, desc, show_progress):
            with autocast():
                h = model(x.to(device, non_blocking=True))
            h = F.normalize(h.float(), dim=1) if normalize else h.float()
            feats.append(h.to(dtype))
            labels.append(y.to(device))
    model.train(was_training)
    if not feats:  # an empty shard (more ranks than images)
        dim = getattr(model, "num_features", None) or model.backbone.num_features
        return torch.zeros(0, dim, dtype=dtype, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)


def _local_topk(queries: torch.Tensor, bank: torch.Tensor, k: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cosine similarities of ``queries`` (m, D) to their ``k`` nearest rows of ``bank`` (n, D), scoring
    ``rows`` bank rows at a time (upcast to fp32 per chunk): ((m, k), (m, k) indices), padded with -inf / 0
    when the bank has fewer than ``k`` rows."""
    m = queries.shape[0]
    best = torch.full((m, k), float("-inf"), device=queries.device)
    best_idx = torch.zeros((m, k), dtype=torch.long, device=queries.device)
    q = queries.float()
    for start in range(0, bank.shape[0], rows):
        sim = q @ bank[start : start + rows].float().T  # (m, r) fp32
        both = torch.cat([best, sim], dim=1)
        idx = torch.cat([best_idx, torch.arange(start, start + sim.shape[1], device=q.device).expand(m, -1)], dim=1)
        best, pos = both.topk(k, dim=1)
        best_idx = idx.gather(1, pos)
    return best, best_idx


@torch.no_grad()
def knn_scores(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int = 200,
               temperature: float = 0.1, chunk_size: int = 1024, bank_rows: int = 65536, sharded: bool = True) -> torch.Tensor:
    """Class scores (m, C) of this rank's ``queries`` (m, D) by the weighted vote of their k most cosine-similar
    entries of the bank sharded over ranks, each voting ``exp(sim / T)`` for its label (Wu et al., 2018, Sec.
    3.4). ``bank`` (n, D) is this rank's shard, L2-normalised (any dtype); ``bank_labels`` (n,).

    Collectives, in the same order on every rank: sizes, the queries (in the bank's dtype), then per chunk of
    ``chunk_size`` global queries one all-gather of each query's local top-k (fp32 similarity, label). On one
    process (or with ``sharded=False``: ``bank`` is the whole bank) it is the plain weighted kNN."""
    queries = F.normalize(queries.float(), dim=1)
    world = world_size() if sharded else 1
    if world == 1:
        sizes, all_queries = [queries.shape[0]], queries
    else:
        sizes = gather_no_grad(torch.tensor([queries.shape[0], bank.shape[0]], device=queries.device)).view(-1, 2)
        sizes, total_bank = sizes[:, 0].tolist(), int(sizes[:, 1].sum())
        all_queries = gather_uneven(queries.to(bank.dtype))  # (M, D)
    k = min(k, bank.shape[0] if world == 1 else total_bank)
    start = sum(sizes[: rank()]) if world > 1 else 0
    mine = range(start, start + queries.shape[0])  # this rank's rows of the global queries
    scores = []
    for c0 in range(0, all_queries.shape[0], chunk_size):
        chunk = all_queries[c0 : c0 + chunk_size]
        sim, idx = _local_topk(chunk, bank, k, bank_rows)  # (c, k)
        labels = bank_labels[idx] if bank.shape[0] else torch.zeros_like(idx)
        if world > 1:  # (W, c, k) -> (c, W*k): every rank's candidates per query
            sim = gather_no_grad(sim).view(world, *sim.shape).permute(1, 0, 2).flatten(1)
            labels = gather_no_grad(labels).view(world, *labels.shape).permute(1, 0, 2).flatten(1)
            sim, pos = sim.topk(k, dim=1)
            labels = labels.gather(1, pos)
        lo, hi = max(mine.start - c0, 0), min(mine.stop - c0, chunk.shape[0])
        if lo < hi:
            votes = torch.zeros(hi - lo, num_classes, device=chunk.device)
            scores.append(votes.scatter_add_(1, labels[lo:hi], (sim[lo:hi] / temperature).exp()))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=queries.device)


def knn_predict(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk_size: int = 1024) -> torch.Tensor:
    """Class scores (N, C) of ``features`` against a whole bank held by this process (normalised here, kept in
    its dtype): the one-process weighted kNN, :func:`knn_scores` without a process group."""
    bank = F.normalize(bank.float(), dim=1).to(bank.dtype)
    return knn_scores(features, bank, bank_labels, num_classes, k, temperature, chunk_size, sharded=False)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of rows, over every rank's rows, whose label is among the ``k`` highest scores (one all-reduce
    of the counts)."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    counts = torch.stack([*(hits[:, :k].any(dim=1).sum() for k in ks), torch.tensor(len(labels), device=scores.device)]).double()
    if world_size() > 1:
        dist.all_reduce(counts)
    counts = counts.tolist()
    return {k: 100.0 * c / max(counts[-1], 1) for k, c in zip(ks, counts[:-1])}


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the ``k`` highest scores (this process's rows only)."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


class KNNEval(Callback):
    """Weighted kNN accuracy of the backbone's features, each validation epoch and once before training.

    The bank is the clean (non-augmented) labelled training split, queries the validation split; both are
    encoded with the backbone in eval mode (``pl_module(x)``) under the trainer's precision. Each rank keeps
    its shard of the bank (bf16, see the module docstring) and scores with :func:`knn_scores`. Logs
    ``val/knn_top1`` and ``val/knn_top5``; the random-init value is logged at step 0. Feature extraction shows
    a progress bar on rank 0 unless ``trainer.enable_progress_bar=false``.

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
        self.bank_rows = 0  # rows of this rank's shard of the last bank (N / world size)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[int, float]:
        dm, device = trainer.datamodule, pl_module.device
        common = dict(autocast=trainer.precision_plugin.forward_context, normalize=True, dtype=bank_dtype(device),
                      show_progress=trainer.progress_bar_callback is not None)
        bank, bank_labels = extract_features(pl_module, dm.eval_dataloader("bank"), device, desc="kNN bank", **common)
        query, query_labels = extract_features(pl_module, dm.eval_dataloader("val"), device, desc="kNN queries", **common)
        labelled = bank_labels >= 0
        bank, bank_labels = bank[labelled], bank_labels[labelled]
        self.bank_rows = bank.shape[0]
        scores = knn_scores(query, bank, bank_labels, dm.num_classes, self.k, self.temperature)
        return topk_hits(scores, query_labels)

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
