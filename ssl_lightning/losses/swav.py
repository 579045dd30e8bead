"""SwAV (Caron et al., 2020): Sinkhorn-Knopp codes and the swapped-prediction loss."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft codes Q (N, K) of N samples over K prototypes (SwAV, Sec. 3.1 and Algorithm 1).

    Solves ``max_Q Tr(Q^T C^T Z) + epsilon H(Q)`` over the transportation polytope (every prototype takes
    the same share N/K of the samples, Eq. 3-4) by ``iterations`` rounds of Sinkhorn-Knopp, starting from
    ``exp(scores / epsilon)``: normalise each prototype's mass to 1/K, then each sample's to 1/N; finally the
    codes are scaled by N so that every sample's code sums to 1 (its soft assignment).

    Runs in fp32 (autocast off) and in the log domain, which gives the same Q as the paper's multiplicative
    updates but cannot overflow or underflow for small epsilon. The caller passes the scores of the whole
    (global) batch, plus any queued samples, and keeps the rows it needs.

    Args:
        scores: (N, K) prototype scores ``z @ C^T`` of L2-normalised projections z and prototypes C.
        epsilon: entropy regularisation, > 0 (0.05).
        iterations: Sinkhorn-Knopp rounds (3).

    Returns:
        (N, K) codes: each row sums to 1; each column sums to about N/K (exactly after infinitely many rounds).
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        n, k = scores.shape
        log_q = scores.float().T / epsilon  # (K, N)
        log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)  # Q /= sum(Q)
        for _ in range(iterations):
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(k)  # prototypes: mass 1/K
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(n)  # samples: mass 1/N
        return (log_q + math.log(n)).exp().T  # (N, K), rows sum to 1


def swav_loss(
    scores: Sequence[torch.Tensor],
    codes: Sequence[torch.Tensor],
    crops_for_assign: Sequence[int],
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwAV's swapped prediction (Sec. 3.1, Eq. 1-2, with multi-crop, Eq. 5).

    For each crop ``s`` whose codes were computed, the code ``q_s`` is predicted from every other crop ``t``:
    ``l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k)`` with ``p_t = softmax(z_t^T C / T)``. The terms are averaged
    over the V - 1 predicting crops and over the coded crops, and over the batch (the reference code's
    normalisation). Computed in fp32.

    Args:
        scores: V tensors (B, K), the prototype scores ``z_t^T C`` of each crop (gradients flow through them).
        codes: one (B, K) code per entry of ``crops_for_assign`` (no gradient; from :func:`sinkhorn_knopp`).
        crops_for_assign: indices into ``scores`` of the crops the codes belong to.
        temperature: T > 0 (0.1).
    """
    if len(scores) < 2 or len(codes) != len(crops_for_assign) or not codes:
        raise ValueError(f"swav_loss needs >= 2 crops and one code per assigned crop, got {len(scores)} crops, "
                         f"{len(codes)} codes for crops {list(crops_for_assign)}")
    with torch.autocast(device_type=scores[0].device.type, enabled=False):
        log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]  # V x (B, K)
        total = scores[0].new_zeros((), dtype=torch.float32)
        for q, s in zip(codes, crops_for_assign):
            q = q.float()
            cross = [-(q * log_p[t]).sum(dim=1).mean() for t in range(len(scores)) if t != s]
            total = total + torch.stack(cross).sum() / (len(scores) - 1)
        return total / len(crops_for_assign)
