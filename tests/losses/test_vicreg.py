import math

import pytest
import torch

from ssl_lightning.losses import vicreg_loss
from ssl_lightning.losses.vicreg import covariance_term, variance_term


def vicreg_reference(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    """Bardes et al. (2022), Eq. 1-6, as loops over samples and dimensions, with the official code's two
    normalisations the paper's coefficients were tuned with: the invariance is averaged over the d dimensions
    too (``F.mse_loss``), and the two branches' variance terms are averaged."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape

    def v(z):  # Eq. 1-2
        total = 0.0
        for j in range(d):
            mean = sum(z[i, j] for i in range(n)) / n
            var = sum((z[i, j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, gamma - math.sqrt(var + eps))
        return total / d

    def c(z):  # Eq. 3-4
        mean = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    cov = sum((z[i, a] - mean[a]) * (z[i, b] - mean[b]) for i in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    s = sum(((z1[i] - z2[i]) ** 2).sum() for i in range(n)) / n / d  # Eq. 5 (/ d: official code)
    return float(lam * s + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2)))


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_matches_paper_reference(coeffs):
    g = torch.Generator().manual_seed(0)
    z1 = 0.5 * torch.randn(10, 6, generator=g)  # std below gamma: the hinge is active
    z2 = z1 + 0.3 * torch.randn(10, 6, generator=g)
    loss, terms = vicreg_loss(z1, z2, *coeffs)
    assert loss.item() == pytest.approx(vicreg_reference(z1, z2, *coeffs), rel=1e-5)
    assert set(terms) == {"invariance", "variance", "covariance"}
    assert loss.item() == pytest.approx(
        coeffs[0] * terms["invariance"].item() + coeffs[1] * terms["variance"].item() + coeffs[2] * terms["covariance"].item(), rel=1e-6)


def test_collapsed_embeddings_cost_the_full_variance_hinge():
    # Constant embeddings: no invariance or covariance cost, each dimension's std is sqrt(eps).
    z = torch.ones(8, 5)
    loss, terms = vicreg_loss(z, z.clone())
    assert terms["invariance"].item() == 0 and terms["covariance"].item() == 0
    assert loss.item() == pytest.approx(25.0 * (1 - math.sqrt(1e-4)), rel=1e-6)


def test_identical_decorrelated_spread_views_cost_nothing():
    # Hadamard columns: zero mean, orthogonal, unbiased variance 4/3 (std > 1): every term is zero.
    h = torch.tensor([[1.0, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]])
    loss, _ = vicreg_loss(h, h.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_covariance_is_normalised_by_the_dimension():
    # Two identical columns of unbiased variance 1: the off-diagonal pair (1, 1) gives 2 * 1^2 / d.
    col = torch.tensor([1.0, -1.0, 1.0, -1.0]) * math.sqrt(3 / 4)
    z = torch.stack([col, col], dim=1)
    assert covariance_term(z).item() == pytest.approx(2 * 1.0 / 2, rel=1e-6)


def test_variance_hinge_at_gamma():
    z = torch.randn(4096, 3) * torch.tensor([0.5, 1.0, 2.0])
    expected = max(0, 1 - math.sqrt(0.25 + 1e-4)) / 3  # only the first dimension is below gamma = 1
    assert variance_term(z).item() == pytest.approx(expected, abs=0.02)


def test_computed_in_fp32_from_bf16_inputs():
    z1, z2 = torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16()
    assert vicreg_loss(z1, z2)[0].dtype == torch.float32
