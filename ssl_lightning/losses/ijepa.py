"""I-JEPA's masked-prediction loss (Assran et al., 2023, Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IJEPA_LOSSES = ("smooth_l1", "l2")


def block_targets(tokens: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """The regression targets: the target encoder's patch tokens (B, N, D), layer-normalised over the feature
    dimension without affine parameters, at the target blocks' patches ``target_ids`` (B, M, Nt).

    Official ``forward_target`` (facebookresearch/ijepa, ``src/train.py``): ``F.layer_norm(h, (h.size(-1),))``
    then ``apply_masks``. Returns (B, M, Nt, D).
    """
    B, M, Nt = target_ids.shape
    D = tokens.shape[-1]
    tokens = F.layer_norm(tokens, (D,))
    index = target_ids.reshape(B, M * Nt, 1).expand(-1, -1, D)
    return torch.gather(tokens, 1, index).reshape(B, M, Nt, D)


def ijepa_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """Mean over the M target blocks, their patches and the D features of the per-element distance between
    the predictions and the (detached) targets, both (B, M, Nt, D); computed in fp32.

    ``"l2"``: the squared error of the paper's Eq. 1, ``(1/M) sum_i sum_{j in B_i} ||s_hat_j - s_j||^2``, divided
    by the (fixed) number of patches per block and by D, which only rescales the gradient.
    ``"smooth_l1"``: Huber with beta = 1, what the official code trains with
    (``src/train.py``: ``loss = F.smooth_l1_loss(z, h)``); it equals half the squared error where
    ``|error| < 1`` (most elements once training has started: the targets have unit variance per patch).
    """
    if kind not in IJEPA_LOSSES:
        raise ValueError(f"kind={kind!r}: one of {', '.join(IJEPA_LOSSES)}")
    pred, target = pred.float(), target.detach().float()
    if kind == "l2":
        return F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=1.0)
