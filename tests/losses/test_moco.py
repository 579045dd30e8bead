import math

import pytest
import torch
import torch.nn.functional as F

from ssl_lightning.losses import moco_loss, moco_v3_loss


def moco_reference(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """He et al. (2020), Eq. 1, as loops in float64: L_q = -log(exp(q.k+ / tau) / (exp(q.k+ / tau) +
    sum_i exp(q.k_i / tau))), q and keys L2-normalised (Algorithm 1), averaged over the batch."""
    q, k, queue = q.double(), k.double(), queue.double()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(q.shape[0]):
        qi, ki = q[i] / q[i].norm(), k[i] / k[i].norm()
        pos = torch.exp(torch.dot(qi, ki) / tau)
        neg = sum(torch.exp(torch.dot(qi, queue[j]) / tau) for j in range(queue.shape[0]))
        total += -torch.log(pos / (pos + neg))
    return total / q.shape[0]


def moco_v3_reference(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """Chen, Xie & He (2021), Algorithm 1 (ctr), as loops in float64: the positive of q_i is k_i, the other
    keys of the batch are negatives; the mean cross entropy is multiplied by 2 tau."""
    q = q.double() / q.double().norm(dim=1, keepdim=True)
    k = k.double() / k.double().norm(dim=1, keepdim=True)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(q.shape[0]):
        den = sum(torch.exp(torch.dot(q[i], k[j]) / tau) for j in range(k.shape[0]))
        total += -torch.log(torch.exp(torch.dot(q[i], k[i]) / tau) / den)
    return 2 * tau * total / q.shape[0]


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_moco_matches_paper_reference(tau):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    queue = F.normalize(torch.randn(11, 8, generator=g), dim=1)
    assert moco_loss(q, k, queue, tau).item() == pytest.approx(moco_reference(q, k, queue, tau).item(), rel=1e-5)


def test_moco_analytic_value_with_orthogonal_queue():
    # q = k and every queued key orthogonal to every query: s_pos = 1, the K negatives s = 0.
    b, size, tau = 3, 7, 0.2
    basis = torch.eye(b + size)
    q, queue = basis[:b], basis[b:]
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + size))
    assert moco_loss(q, q.clone(), queue, tau).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("filled", [1, 4, 11])
def test_moco_partly_filled_queue_uses_only_its_keys(filled):
    """Rows at and after ``num_valid`` are not negatives, whatever they hold: the loss equals the reference
    on the filled rows alone, and the gradient does not depend on the empty rows."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    queue = F.normalize(torch.randn(11, 8, generator=g), dim=1)
    expected = moco_reference(q, k, queue[:filled], 0.2).item()
    assert moco_loss(q, k, queue, 0.2, torch.tensor(filled)).item() == pytest.approx(expected, rel=1e-5)
    garbage = queue.clone()
    garbage[filled:] = 100.0  # what an empty row holds must not matter
    assert moco_loss(q, k, garbage, 0.2, torch.tensor(filled)).item() == pytest.approx(expected, rel=1e-5)


def test_moco_empty_queue_gives_zero_loss_and_zero_gradient():
    q = torch.randn(4, 8, requires_grad=True)
    loss = moco_loss(q, torch.randn(4, 8), torch.zeros(6, 8), 0.2, torch.tensor(0))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(q.grad).all() and q.grad.abs().max() == 0


def test_moco_gradient_reaches_only_the_query():
    q = torch.randn(4, 8, requires_grad=True)
    k = torch.randn(4, 8, requires_grad=True)
    queue = F.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    moco_loss(q, k.detach(), queue.detach(), 0.2).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None


def test_moco_invariant_to_scale_of_query_and_key():
    q, k, queue = torch.randn(4, 8), torch.randn(4, 8), F.normalize(torch.randn(6, 8), dim=1)
    assert moco_loss(5 * q, 0.1 * k, queue, 0.2).item() == pytest.approx(moco_loss(q, k, queue, 0.2).item(), rel=1e-6)


def test_moco_is_fp32_under_bf16_autocast():
    q, k, queue = torch.randn(8, 16), torch.randn(8, 16), F.normalize(torch.randn(64, 16), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = moco_loss(q, k, queue, 0.2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(moco_loss(q, k, queue, 0.2).item(), rel=1e-6)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_moco_v3_matches_paper_reference(tau):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert moco_v3_loss(q, k, tau).item() == pytest.approx(moco_v3_reference(q, k, tau).item(), rel=1e-5)


def test_moco_v3_analytic_value_for_aligned_orthogonal_batch():
    b, tau = 5, 0.2
    z = torch.eye(b, 12)
    expected = 2 * tau * -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + b - 1))
    assert moco_v3_loss(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_moco_v3_keys_split_over_ranks_equal_the_full_batch():
    """Each rank's queries against the gathered keys (positive at rank * n + i), averaged over ranks, give
    the single-process loss over the whole batch, in value and in gradient."""
    world, n = 3, 4
    q = torch.randn(world * n, 8, requires_grad=True)
    k = torch.randn(world * n, 8)
    full = moco_v3_loss(q, k, 0.2)
    (g_full,) = torch.autograd.grad(full, [q])
    split = torch.stack([moco_v3_loss(q[r * n : (r + 1) * n], k, 0.2, offset=r * n) for r in range(world)]).mean()
    (g_split,) = torch.autograd.grad(split, [q])
    assert split.item() == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(g_split, g_full)
