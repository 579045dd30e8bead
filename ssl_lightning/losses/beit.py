"""BEiT's masked image modelling loss (Bao et al., 2022, Eq. 1): cross-entropy on the visual tokens of the
masked patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def beit_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``-mean_{(b, n): mask} log softmax(logits)[tokens_{b, n}]``: the mean over masked positions, in fp32.

    Fixed shapes (no boolean indexing, so no host-device synchronisation): the positions that take no loss
    are given the target ``ignore_index``, which cross-entropy leaves out of the sum and the count.

    Args:
        logits: (B, M, V) scores at M positions per sample (all N patches, or a fixed-size selection that
            holds every masked one, as :meth:`~ssl_lightning.methods.BEiT.forward_beit` passes).
        tokens: (B, M) visual-token ids of the un-masked image at those positions, from the tokenizer.
        mask: (B, M) bool, True where the position is masked (takes a loss).
    """
    if logits.shape[:-1] != tokens.shape or tokens.shape != mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} "
                         "must share their leading (B, M) shape")
    targets = torch.where(mask, tokens, IGNORE_INDEX)  # (B, M)
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
