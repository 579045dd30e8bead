"""MoCo's InfoNCE losses: v2 against a queue of negatives, v3 against the keys of the (global) batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float,
              num_valid: torch.Tensor | int | None = None) -> torch.Tensor:
    """InfoNCE of MoCo (He et al., 2020, Eq. 1 and Algorithm 1), mean over the B queries.

    ``L_q = -log exp(q.k+ / T) / (exp(q.k+ / T) + sum_i exp(q.k_i / T))``: each query's positive is the key of
    the other view of its image, its K negatives are the queue. Computed as cross entropy on the logits
    ``[q.k+, q.queue] / T`` with label 0, in fp32 (autocast off), after L2-normalising q and k.

    Args:
        q: (B, D) queries (the query encoder's projections; gradients flow through them).
        k: (B, D) positive keys from the momentum encoder; the caller detaches them.
        queue: (K, D) negative keys, L2-normalised (the module's queue before this step's keys are added).
        temperature: T > 0.
        num_valid: how many leading rows of ``queue`` hold keys (a 0-dim tensor, so no host sync); the other
            rows are not negatives. ``None``: every row. With no valid row the loss is 0 (no negatives).
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = q @ queue.float().T  # (B, K)
        if num_valid is not None:
            empty = torch.arange(queue.shape[0], device=q.device) >= num_valid  # (K,)
            l_neg = l_neg.masked_fill(empty, float("-inf"))
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1 + K)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)


def moco_v3_loss(q: torch.Tensor, k_all: torch.Tensor, temperature: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's contrastive loss (Chen, Xie & He, 2021, Algorithm 1, ``ctr``), mean over the B queries.

    Query i's positive is key ``offset + i`` of ``k_all``; every other key of the (global) batch is a
    negative. Cross entropy on ``q @ k_all.T / T``, multiplied by ``2T`` as in the paper (which keeps the
    gradient scale independent of T). Computed in fp32 (autocast off) after L2-normalising q and k.

    Args:
        q: (B, D) predictions of the query branch.
        k_all: (M, D) momentum-encoder keys of the global batch (gathered from all ranks, detached),
            holding this rank's keys at rows ``offset .. offset + B``.
        temperature: T > 0.
        offset: where this rank's keys start in ``k_all`` (rank * B under DDP).
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=1)
        k_all = F.normalize(k_all.float(), dim=1)
        logits = q @ k_all.T / temperature  # (B, M)
        labels = torch.arange(q.shape[0], device=q.device) + offset
        return F.cross_entropy(logits, labels) * (2 * temperature)
