import pytest
import torch

from ssl_lightning.losses import byol_loss


def byol_reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Grill et al. (2020), Eq. 2: || p / ||p|| - z / ||z|| ||_2^2, averaged over the batch."""
    return torch.stack([((pi / pi.norm() - zi / zi.norm()) ** 2).sum() for pi, zi in zip(p.double(), z.double())]).mean()


def test_matches_paper_reference():
    p, z = torch.randn(7, 32), torch.randn(7, 32)
    assert byol_loss(p, z).item() == pytest.approx(byol_reference(p, z).item(), rel=1e-5)


@pytest.mark.parametrize(("sign", "expected"), [(1.0, 0.0), (-1.0, 4.0)])
def test_analytic_values_for_aligned_and_opposite(sign, expected):
    z = torch.randn(5, 16)
    assert byol_loss(sign * 2.5 * z, z).item() == pytest.approx(expected, abs=1e-5)


def test_orthogonal_vectors_give_two():
    p, z = torch.eye(4, 8), torch.eye(4, 8).roll(1, dims=1)
    assert byol_loss(p, z).item() == pytest.approx(2.0, abs=1e-6)


def test_gradient_flows_to_prediction_only_when_target_detached():
    p = torch.randn(3, 8, requires_grad=True)
    z = torch.randn(3, 8, requires_grad=True)
    byol_loss(p, z.detach()).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None
