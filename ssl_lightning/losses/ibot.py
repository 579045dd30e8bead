"""iBOT's masked-image-modelling loss with an online tokenizer (Zhou et al., 2022, Eq. 2 and Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def ibot_patch_loss(student_logits: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                    masks: Sequence[torch.Tensor], student_temp: float = 0.1) -> torch.Tensor:
    """``L_MIM``: for each global crop, the student's patch distributions of the masked crop predict the
    teacher's of the same, un-masked crop at the masked positions: per image
    ``sum_{i: m_i} H(P_t^i, P_s^i) / max(1, sum_i m_i)``, the mean over the batch (images without a masked
    patch count as 0, as in the official ``iBOTLoss``), then the mean over the crops. Computed in fp32;
    no host synchronisation (the mask weights the per-patch terms).

    Args:
        student_logits: G tensors (B, N, K), the student's patch logits on the masked crops.
        teacher: G tensors (B, N, K), centred and sharpened teacher patch probabilities
            (:func:`~ssl_lightning.losses.dino.teacher_probs`).
        masks: G bool tensors (B, N), True where the student's patch was replaced by the mask token.
        student_temp: tau_s > 0 (0.1).
    """
    if not len(student_logits) == len(teacher) == len(masks) >= 1:
        raise ValueError(f"ibot_patch_loss needs one teacher and one mask per crop, got {len(student_logits)} crops, "
                         f"{len(teacher)} teacher outputs and {len(masks)} masks")
    with torch.autocast(device_type=student_logits[0].device.type, enabled=False):
        terms = []
        for s, t, m in zip(student_logits, teacher, masks):
            ce = -(t * F.log_softmax(s.float() / student_temp, dim=-1)).sum(dim=-1)  # (B, N)
            m = m.float()
            terms.append(((ce * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean())
        return torch.stack(terms).mean()
