"""iBOT's masked-patch loss against a slow reference written from the paper's Eq. 2 / official loss, and
analytic values."""

from __future__ import annotations

import math

import torch

from ssl_lightning.losses import ibot_patch_loss, teacher_probs


def reference_patch_loss(student, teacher_logits, center, masks, tps, tpt) -> float:
    """Per crop, per image: the mean over masked patches of H(P_t, P_s); images without masked patches
    count 0; the mean over images, then over crops. One patch and one class at a time, float64."""
    crops = []
    for s, t, m in zip(student, teacher_logits, masks):
        images = []
        for b in range(s.shape[0]):
            total, count = 0.0, 0
            for i in range(s.shape[1]):
                if not m[b, i]:
                    continue
                t_exp = [math.exp((t[b, i, k].item() - center[k].item()) / tpt) for k in range(t.shape[2])]
                s_exp = [math.exp(s[b, i, k].item() / tps) for k in range(s.shape[2])]
                total -= sum(t_exp[k] / sum(t_exp) * math.log(s_exp[k] / sum(s_exp)) for k in range(s.shape[2]))
                count += 1
            images.append(total / max(count, 1))
        crops.append(sum(images) / len(images))
    return sum(crops) / len(crops)


def test_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    teacher = [torch.randn(3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(6, generator=g, dtype=torch.float64) * 0.1
    masks = [torch.rand(3, 5, generator=g) < 0.5 for _ in range(2)]
    masks[0][1] = False  # an unmasked image: 0, but counted in the batch mean
    probs = [teacher_probs(t, center, 0.07) for t in teacher]
    ours = ibot_patch_loss(student, probs, masks, 0.1)
    expected = reference_patch_loss(student, teacher, center, masks, 0.1, 0.07)
    assert abs(ours.item() - expected) < 1e-4 * expected


def test_no_masked_patch_gives_zero_and_uniform_student_gives_log_k():
    k = 12
    probs = [teacher_probs(torch.randn(2, 4, k), torch.zeros(k), 0.04)]
    student = [torch.zeros(2, 4, k, requires_grad=True)]
    assert ibot_patch_loss(student, probs, [torch.zeros(2, 4, dtype=torch.bool)]).item() == 0.0
    full = ibot_patch_loss(student, probs, [torch.ones(2, 4, dtype=torch.bool)])
    torch.testing.assert_close(full, torch.tensor(math.log(k)))


def test_unmasked_patches_get_no_gradient():
    student = [torch.randn(1, 4, 5, requires_grad=True)]
    probs = [teacher_probs(torch.randn(1, 4, 5), torch.zeros(5), 0.04)]
    mask = torch.tensor([[True, False, True, False]])
    ibot_patch_loss(student, probs, [mask]).backward()
    grad = student[0].grad[0].abs().sum(dim=-1)
    assert (grad[mask[0]] > 0).all() and (grad[~mask[0]] == 0).all()
