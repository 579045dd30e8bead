"""Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021, Eq. 1-2 and Algorithm 1)."""

from __future__ import annotations

import torch


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each dimension of (N, D) ``z`` to zero mean and unit variance over the batch, as a training-mode
    ``BatchNorm1d(D, affine=False)`` computes it (biased variance, ``eps`` inside the square root)."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> torch.Tensor:
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``C`` the (D, D) cross-correlation of the two
    views' embeddings, each standardised over the batch (Algorithm 1: ``c = bn(z_a).T @ bn(z_b) / N``).

    The batch is the *global* batch: under DDP the method gathers ``z1`` and ``z2`` (with gradients) before
    calling this, so the statistics and ``C`` are those of all N images, and the gradient is exact (never
    all_reduce ``C`` outside autograd). Computed in fp32.

    Args:
        z1, z2: (N, D) projector outputs of the two views (not yet normalised).
        lambd: weight of the redundancy-reduction (off-diagonal) term; the paper's 0.0051 for D = 8192.
        eps: BatchNorm's epsilon.
    """
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):  # fp32 correlations under autocast
        c = batch_standardize(z1.float(), eps).T @ batch_standardize(z2.float(), eps) / n  # (D, D)
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag
