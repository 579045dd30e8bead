"""DINO's self-distillation loss (Caron et al., 2021, Algorithm 1 and Eq. 2-3) and its diagnostics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((t - c) / tau_t)`` in fp32, no gradient
    (Algorithm 1: ``t = softmax((t - C) / tpt)``).

    Args:
        teacher_logits: (..., K) teacher head outputs.
        center: (K,) or broadcastable, the EMA center C.
        temperature: tau_t > 0 (0.04 warming up to 0.07).
    """
    with torch.autocast(device_type=teacher_logits.device.type, enabled=False):
        return F.softmax((teacher_logits.float() - center.float()) / temperature, dim=-1)


def dino_loss(student_logits: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], student_temp: float = 0.1) -> torch.Tensor:
    """``H(P_t, P_s)`` averaged over every (teacher crop q, student crop v) pair with v != q (Eq. 3):
    ``-sum_k P_t^(q)_k log softmax(s_v / tau_s)_k``, the mean over the batch, then the mean over the
    ``G * V - G`` pairs (the official ``DINOLoss`` normalisation). The teacher sees the G global crops,
    which come first among the student's V crops. Computed in fp32.

    Args:
        student_logits: V tensors (B, K) (gradients flow through them).
        teacher: G <= V tensors (B, K), teacher probabilities from :func:`teacher_probs`.
        student_temp: tau_s > 0 (0.1).
    """
    if not 1 <= len(teacher) <= len(student_logits) or len(student_logits) < 2:
        raise ValueError(f"dino_loss needs >= 2 student crops and 1..V teacher crops, got {len(student_logits)} "
                         f"and {len(teacher)}")
    with torch.autocast(device_type=student_logits[0].device.type, enabled=False):
        log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_logits]  # V x (B, K)
        terms = [-(t * log_p[v]).sum(dim=-1).mean() for q, t in enumerate(teacher) for v in range(len(log_p)) if v != q]
        return torch.stack(terms).mean()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the distributions in the last dimension; 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1).mean()
