"""MAE's reconstruction loss (He et al., 2022, Sec. 3): mean squared error on masked patches only."""

from __future__ import annotations

import torch


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
             eps: float = 1e-6) -> torch.Tensor:
    """Per-patch MSE averaged over the masked patches: ``sum_n mask_n ||pred_n - t_n||^2 / P / sum_n mask_n``.

    With ``norm_pix`` the target of each patch is its pixels normalised by the patch's own mean and
    (unbiased) variance, ``t = (x - mean) / sqrt(var + eps)`` (the paper's "normalized pixels" target,
    Sec. 3 and Table 1d, default in the reference code).

    Args:
        pred: (B, N, P) decoder predictions, P = patch_size**2 * 3.
        target: (B, N, P) patchified (data-normalised) images.
        mask: (B, N), 1/True where the patch was masked (removed from the encoder's input).
    """
    pred, target = pred.float(), target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum()
