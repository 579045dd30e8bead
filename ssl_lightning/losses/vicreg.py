"""VICReg: Variance-Invariance-Covariance Regularization (Bardes et al., 2022, Sec. 3.2, Eq. 1-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def invariance_term(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``s(Z, Z') = 1/n sum_i ||z_i - z'_i||^2 / d``: the mean squared error over all n x d entries (Eq. 5,
    averaged over the dimensions as in the official implementation's ``F.mse_loss``)."""
    return F.mse_loss(z1.float(), z2.float())


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """``v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps))`` over the batch, unbiased variance (Eq. 1-2)."""
    std = torch.sqrt(z.float().var(dim=0) + eps)  # (D,)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """``c(Z) = 1/d sum_{i != j} C(Z)_ij^2`` with ``C(Z)`` the (D, D) covariance over the batch, 1/(n-1) (Eq. 3-4)."""
    z = z.float()
    n, d = z.shape
    z = z - z.mean(dim=0)
    with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 covariance under autocast
        cov = z.T @ z / (n - 1)  # (D, D)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')]`` (Eq. 6), in fp32.

    The paper's Eq. 6 writes ``mu [v(Z) + v(Z')]``; the official implementation, which produced the paper's
    results with lambda = mu = 25, nu = 1, averages the two variance terms, as here. The covariance terms are
    summed. Statistics are over the batch the caller passes: under DDP the method gathers both views (with
    gradients) first, so variance and covariance are those of the global batch.

    Args:
        z1, z2: (N, D) expander outputs of the two views.
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu.
        gamma: target standard deviation of the variance hinge.
        eps: added to the variance before the square root.

    Returns:
        the loss and its three unweighted terms ``{"invariance", "variance", "covariance"}`` (detached).
    """
    inv = invariance_term(z1, z2)
    var = (variance_term(z1, gamma, eps) + variance_term(z2, gamma, eps)) / 2
    cov = covariance_term(z1) + covariance_term(z2)
    loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
