import math

import pytest
import torch
import torch.nn.functional as F

from ssl_lightning.losses import nt_xent_loss


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Chen et al. (2020), Eq. 1 and Algorithm 1, written as loops: l(i, j) = -log(exp(s_ij / tau) /
    sum_{k != i} exp(s_ik / tau)), averaged over all 2N positive pairs (i, j) and (j, i)."""
    z = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    sim = lambda a, b: torch.dot(z[a], z[b]) / (z[a].norm() * z[b].norm())  # noqa: E731
    total = torch.zeros((), dtype=torch.float64)
    for k in range(n):
        for i, j in ((k, k + n), (k + n, k)):
            den = sum(torch.exp(sim(i, m) / tau) for m in range(2 * n) if m != i)
            total += -torch.log(torch.exp(sim(i, j) / tau) / den)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_paper_reference(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert nt_xent_loss(z1, z2, tau).double().item() == pytest.approx(nt_xent_reference(z1, z2, tau).item(), rel=1e-5)


def test_analytic_value_for_aligned_orthogonal_views():
    # Positives identical, everything else orthogonal: s_pos = 1, s_neg = 0 for the 2N - 2 negatives.
    n, tau = 5, 0.2
    z = torch.eye(n, 16)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent_loss(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_invariant_to_scale_of_inputs():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert nt_xent_loss(3 * z1, 0.5 * z2, 0.1).item() == pytest.approx(nt_xent_loss(z1, z2, 0.1).item(), rel=1e-6)


def test_global_negatives_split_over_ranks_equal_the_full_batch():
    """Each rank's loss over its local anchors against the gathered batch, averaged over ranks, is the
    single-process loss over the whole batch, in value and in gradient."""
    world, n = 3, 4
    z1 = torch.randn(world * n, 8, requires_grad=True)
    z2 = torch.randn(world * n, 8, requires_grad=True)
    full = nt_xent_loss(z1, z2, 0.3)
    (g1_full, g2_full) = torch.autograd.grad(full, [z1, z2])

    per_rank = [
        nt_xent_loss(z1[r * n : (r + 1) * n], z2[r * n : (r + 1) * n], 0.3, z1, z2, offset=r * n) for r in range(world)
    ]
    split = torch.stack(per_rank).mean()
    (g1, g2) = torch.autograd.grad(split, [z1, z2])
    assert split.item() == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(g1, g1_full)
    torch.testing.assert_close(g2, g2_full)


def test_self_similarity_is_excluded():
    # With a single pair, the only candidate left is the positive: loss is exactly 0.
    z1, z2 = torch.randn(1, 4), torch.randn(1, 4)
    assert nt_xent_loss(z1, z2, 0.1).item() == pytest.approx(0.0, abs=1e-7)


def test_computed_in_fp32_from_bf16_inputs():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    loss = nt_xent_loss(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    ref = nt_xent_loss(F.normalize(z1.bfloat16().float()), F.normalize(z2.bfloat16().float()), 0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
