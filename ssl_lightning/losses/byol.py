"""BYOL's regression loss (Grill et al., 2020, Eq. 2): 2 - 2 cos(p, z)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``.

    Args:
        p: (B, D) online predictions.
        z: (B, D) target projections; the caller detaches them (stop-gradient).
    """
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1)).mean()
