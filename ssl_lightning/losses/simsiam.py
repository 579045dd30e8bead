"""SimSiam's loss (Chen & He, 2021, Eq. 1 and Algorithm 1): negative cosine similarity with stop-gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``D(p, z) = -mean_b cos(p_b, stopgrad(z_b))``, the paper's ``D`` of Algorithm 1, in fp32.

    The stop-gradient on ``z`` is part of ``D`` in the paper (Eq. 3, Algorithm 1: ``z = z.detach()``), so it is
    here too: without it SimSiam collapses (Sec. 4.1). The method symmetrises:
    ``L = D(p1, z2) / 2 + D(p2, z1) / 2`` (Eq. 2). Values lie in [-1, 1]; -1 means perfectly aligned.

    Args:
        p: (B, D) predictions of one view.
        z: (B, D) projections of the other view.
    """
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=-1).mean()
