import pytest
import torch
from torch import nn

from ssl_lightning.losses import barlow_twins_loss
from ssl_lightning.losses.barlow_twins import batch_standardize


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Zbontar et al. (2021), Eq. 1-2, as loops: with embeddings mean-centred over the batch b,
    C_ij = sum_b z1_bi z2_bj / (sqrt(sum_b z1_bi^2) sqrt(sum_b z2_bj^2)),
    L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2."""
    z1, z2 = z1.double(), z2.double()
    z1, z2 = z1 - z1.mean(0), z2 - z2.mean(0)
    n, d = z1.shape
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            num = sum(z1[b, i] * z2[b, j] for b in range(n))
            c = num / (torch.sqrt(sum(z1[b, i] ** 2 for b in range(n))) * torch.sqrt(sum(z2[b, j] ** 2 for b in range(n))))
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def algorithm1_reference(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """The paper's Algorithm 1 (PyTorch pseudocode): BatchNorm1d(affine=False) in training mode, c = z_a.T z_b / N."""
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).double().train()
    c = bn(z1.double()).T @ bn(z2.double()) / z1.shape[0]
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on_diag + lambd * off_diag


@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_matches_paper_equations(lambd):
    g = torch.Generator().manual_seed(0)
    z1, z2 = 3 * torch.randn(9, 6, generator=g) + 1, torch.randn(9, 6, generator=g)
    loss = barlow_twins_loss(z1, z2, lambd, eps=0.0)
    assert loss.item() == pytest.approx(barlow_reference(z1, z2, lambd).item(), rel=1e-5)


def test_matches_algorithm_1_with_batchnorm():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g) * 0.1
    assert barlow_twins_loss(z1, z2, 0.0051).item() == pytest.approx(algorithm1_reference(z1, z2, 0.0051).item(), rel=1e-5)


def test_standardisation_equals_batchnorm_without_affine():
    z = torch.randn(10, 5) * 4 + 2
    torch.testing.assert_close(batch_standardize(z), nn.BatchNorm1d(5, affine=False).train()(z))


# Three columns of a 4x4 Hadamard matrix: zero mean, unit (biased) variance, mutually orthogonal.
H = torch.tensor([[1.0, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]])


def test_identity_correlation_gives_zero():
    assert barlow_twins_loss(H, 5 * H + 3, 0.0051, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_anti_correlated_views_give_four_per_dimension():
    # C = -I: every diagonal term is (1 - (-1))^2 = 4, no off-diagonal term.
    assert barlow_twins_loss(H, -H, 0.0051, eps=0.0).item() == pytest.approx(4.0 * 3, rel=1e-6)


def test_fully_redundant_dimensions_cost_lambda_per_pair():
    # All D dimensions identical in both views: C = ones, diagonal perfect, D(D-1) off-diagonal ones.
    z = H[:, :1].repeat(1, 3)
    assert barlow_twins_loss(z, z, 0.1, eps=0.0).item() == pytest.approx(0.1 * 3 * 2, rel=1e-6)


def test_computed_in_fp32_from_bf16_inputs():
    z1, z2 = torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16()
    assert barlow_twins_loss(z1, z2).dtype == torch.float32
