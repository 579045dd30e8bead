"""DINO's loss against a slow reference written from the paper's Algorithm 1, and analytic values."""

from __future__ import annotations

import math

import torch

from ssl_lightning.losses import dino_loss, entropy, teacher_probs


def reference_dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
                        tps: float, tpt: float) -> float:
    """Algorithm 1 of the paper, generalised to multi-crop as Sec. 3.1 (sum over teacher global crops and
    every other student crop), one sample and one class at a time in float64."""
    total, pairs = 0.0, 0
    for q, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == q:
                continue
            h = 0.0
            for b in range(s.shape[0]):
                t_exp = [math.exp((t[b, k].item() - center[k].item()) / tpt) for k in range(t.shape[1])]
                s_exp = [math.exp(s[b, k].item() / tps) for k in range(s.shape[1])]
                for k in range(s.shape[1]):
                    h -= t_exp[k] / sum(t_exp) * math.log(s_exp[k] / sum(s_exp))
            total += h / s.shape[0]
            pairs += 1
    return total / pairs


def test_matches_algorithm_1_with_multi_crop():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 7, generator=g, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local crops
    teacher = [torch.randn(3, 7, generator=g, dtype=torch.float64) for _ in range(2)]
    center = torch.randn(7, generator=g, dtype=torch.float64) * 0.1
    probs = [teacher_probs(t, center, 0.04) for t in teacher]
    ours = dino_loss(student, probs, student_temp=0.1)
    expected = reference_dino_loss(student, teacher, center, 0.1, 0.04)
    assert abs(ours.item() - expected) < 1e-4 * expected


def test_two_crops_is_the_symmetrised_loss_of_algorithm_1():
    g = torch.Generator().manual_seed(1)
    s1, s2, t1, t2 = (torch.randn(5, 11, generator=g) for _ in range(4))
    c = torch.zeros(11)
    p1, p2 = teacher_probs(t1, c, 0.05), teacher_probs(t2, c, 0.05)

    def H(t, s):
        return -(t * torch.log_softmax(s / 0.1, dim=1)).sum(dim=1).mean()

    torch.testing.assert_close(dino_loss([s1, s2], [p1, p2], 0.1), H(p1, s2) / 2 + H(p2, s1) / 2)


def test_uniform_student_gives_log_k_whatever_the_teacher():
    k = 16
    teacher = [teacher_probs(torch.randn(4, k), torch.zeros(k), 0.04) for _ in range(2)]
    student = [torch.full((4, k), 3.0) for _ in range(3)]
    torch.testing.assert_close(dino_loss(student, teacher), torch.tensor(math.log(k)))


def test_one_hot_teacher_gives_the_cross_entropy_of_its_class():
    k, a, tau = 10, 2.0, 0.1
    teacher = torch.zeros(2, k)
    teacher[:, 3] = 1.0
    student = torch.zeros(2, k)
    student[:, 3] = a
    expected = -math.log(math.exp(a / tau) / (math.exp(a / tau) + k - 1))
    torch.testing.assert_close(dino_loss([student, student], [teacher, teacher], tau), torch.tensor(expected))


def test_identical_student_and_teacher_distributions_leave_only_the_teacher_entropy():
    """Student logits tau_s * log P_t reproduce P_t exactly: the loss equals H(P_t), so KL = loss - H = 0."""
    g = torch.Generator().manual_seed(2)
    t = torch.randn(6, 9, generator=g)
    probs = teacher_probs(t, torch.zeros(9), 0.07)
    student = 0.1 * probs.log()
    loss = dino_loss([student, student], [probs, probs], 0.1)
    torch.testing.assert_close(loss, entropy(probs))


def test_center_and_temperature_of_the_teacher():
    t = torch.tensor([[1.0, 2.0, 3.0]])
    c = torch.tensor([1.0, 2.0, 3.0])  # a center equal to the output: uniform teacher
    torch.testing.assert_close(teacher_probs(t, c, 0.04), torch.full((1, 3), 1 / 3))
    sharp = teacher_probs(t, torch.zeros(3), 0.04)
    soft = teacher_probs(t, torch.zeros(3), 1.0)
    assert sharp[0, 2] > soft[0, 2] > 1 / 3
    torch.testing.assert_close(soft, torch.softmax(t, dim=1))


def test_entropy_analytic_values():
    torch.testing.assert_close(entropy(torch.full((3, 8), 1 / 8)), torch.tensor(math.log(8)))
    torch.testing.assert_close(entropy(torch.eye(4)), torch.tensor(0.0))


def test_gradient_flows_to_the_student_only():
    s = [torch.randn(2, 5, requires_grad=True) for _ in range(2)]
    t = [teacher_probs(torch.randn(2, 5, requires_grad=True), torch.zeros(5), 0.04) for _ in range(2)]
    dino_loss(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert not any(p.requires_grad for p in t)
