"""BEiT's masked image modelling loss (Bao et al., 2022, Eq. 1): cross-entropy on the visual tokens of the
masked patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def beit_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-mean_{(b, n): mask} log softmax(logits)[tokens_{b, n}]``: the mean over masked positions.

    Args:
        logits: (M, V) scores of the M masked positions, in the order of ``mask.nonzero()`` (row-major over
            (B, N)): the method applies its head only there, as the reference code does.
        tokens: (B, N) visual-token ids of the un-masked image, from the tokenizer.
        mask: (B, N) bool, True at the M masked positions.
    """
    targets = tokens[mask]  # (M,)
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows for {targets.shape[0]} masked positions")
    return F.cross_entropy(logits.float(), targets)
