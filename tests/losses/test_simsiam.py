import pytest
import torch

from ssl_lightning.losses import simsiam_loss


def simsiam_reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Chen & He (2021), Eq. 1 and Algorithm 1: D(p, z) = -(p / ||p||_2) . (z / ||z||_2), averaged over the batch."""
    p, z = p.double(), z.double()
    return -sum(torch.dot(pi / pi.norm(), zi / zi.norm()) for pi, zi in zip(p, z)) / p.shape[0]


def test_matches_paper_reference():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(7, 32, generator=g), torch.randn(7, 32, generator=g)
    assert simsiam_loss(p, z).item() == pytest.approx(simsiam_reference(p, z).item(), rel=1e-5)


@pytest.mark.parametrize(("sign", "expected"), [(1.0, -1.0), (-1.0, 1.0)])
def test_analytic_values_for_aligned_and_opposite(sign, expected):
    z = torch.randn(5, 16)
    assert simsiam_loss(sign * 3.0 * z, z).item() == pytest.approx(expected, abs=1e-6)


def test_orthogonal_vectors_give_zero():
    assert simsiam_loss(torch.eye(4, 8), torch.eye(4, 8).roll(1, dims=1)).item() == pytest.approx(0.0, abs=1e-7)


def test_stop_gradient_on_the_target():
    """Algorithm 1 detaches z inside D: the gradient reaches p only, even if the caller forgets."""
    p = torch.randn(3, 8, requires_grad=True)
    z = torch.randn(3, 8, requires_grad=True)
    simsiam_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_symmetrised_loss_of_the_method_equals_the_paper():
    """L = D(p1, z2) / 2 + D(p2, z1) / 2 (Eq. 2)."""
    p1, p2, z1, z2 = torch.randn(4, 6, 10).unbind()
    loss = simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2
    ref = simsiam_reference(p1, z2) / 2 + simsiam_reference(p2, z1) / 2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_computed_in_fp32_from_bf16_inputs():
    p, z = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()
    assert simsiam_loss(p, z).dtype == torch.float32
