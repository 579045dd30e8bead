"""Rotation prediction's pretext batch (Gidaris et al., 2018, Sec. 2.2 and 3.1.3)."""

from __future__ import annotations

import torch

NUM_ROTATIONS = 4  # 0, 90, 180 and 270 degrees


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations: (B, C, S, S) -> ((4B, C, S, S), (4B,) labels).

    The paper's best setting feeds the four rotated copies of each image in the same batch (Sec. 3.1.3,
    "balanced" batches; each image carries all labels). Block ``r`` of the output holds the batch rotated
    by ``r x 90`` degrees counter-clockwise (``torch.rot90`` with ``k=r`` on the spatial dims), label ``r``;
    block 0 is the batch itself. Exact and cheap: rot90 only reorders pixels.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation prediction needs square images to batch all four rotations, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(NUM_ROTATIONS)])  # (4B, C, S, S)
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])  # (4B,)
    return rotated, labels
