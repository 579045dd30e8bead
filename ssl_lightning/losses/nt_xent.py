"""NT-Xent, the normalized temperature-scaled cross entropy of SimCLR (Chen et al., 2020, Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Mean NT-Xent over the 2n local anchors ``cat(z1, z2)``.

    Each anchor's positive is the other view of the same image; its negatives are the other 2M - 2 views of
    the global batch, ``cat(z1_all, z2_all)`` (M = global batch size, default: the local batch, M = n).
    ``offset`` is where the local batch starts inside ``z1_all``/``z2_all`` (rank * n under DDP).

    Computed as cross entropy on logits (never ``log(pos / (pos + neg))`` from ``exp``), in fp32.

    Args:
        z1, z2: (n, D) projections of the two views; normalised here.
        temperature: tau > 0.
        z1_all, z2_all: (M, D) projections of the global batch, containing z1/z2 at ``offset``.
    """
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    z1_all = z1 if z1_all is None else F.normalize(z1_all.float(), dim=1)
    z2_all = z2 if z2_all is None else F.normalize(z2_all.float(), dim=1)
    n, m = z1.shape[0], z1_all.shape[0]
    anchors = torch.cat([z1, z2])  # (2n, D)
    candidates = torch.cat([z1_all, z2_all])  # (2M, D)
    with torch.autocast(device_type=z1.device.type, enabled=False):  # fp32 logits under bf16/fp16 autocast
        logits = anchors @ candidates.T / temperature  # (2n, 2M)

    local = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([local, local + m])  # where each anchor sits among the candidates
    pos_idx = torch.cat([local + m, local])  # its other view
    logits[torch.arange(2 * n, device=z1.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)
