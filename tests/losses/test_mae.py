import pytest
import torch

from ssl_lightning.losses import mae_loss


def mae_reference(pred, target, mask, norm_pix, eps=1e-6):
    """He et al. (2022), Sec. 3: mean over masked patches of the per-pixel squared error; with normalised
    pixels each target patch is standardised by its own mean and (unbiased) variance. Loops, float64."""
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if not mask[b, n]:
                continue
            t = target[b, n].double()
            if norm_pix:
                mean = t.sum() / t.numel()
                var = ((t - mean) ** 2).sum() / (t.numel() - 1)
                t = (t - mean) / (var + eps).sqrt()
            total += ((pred[b, n].double() - t) ** 2).sum().item() / t.numel()
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_matches_paper_reference(norm_pix):
    torch.manual_seed(0)
    pred, target = torch.randn(3, 16, 12), torch.randn(3, 16, 12) * 2 + 1
    mask = torch.rand(3, 16) < 0.75
    assert mae_loss(pred, target, mask, norm_pix).item() == pytest.approx(mae_reference(pred, target, mask, norm_pix), rel=1e-5)


def test_only_masked_patches_count():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 8, 12, requires_grad=True), torch.randn(2, 8, 12)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :6] = True
    loss = mae_loss(pred, target, mask, norm_pix=False)
    changed = pred.detach().clone()
    changed[:, 6:] += 100.0  # visible patches' predictions do not matter
    assert mae_loss(changed, target, mask, norm_pix=False).item() == pytest.approx(loss.item())
    loss.backward()
    assert pred.grad[:, 6:].abs().sum() == 0 and pred.grad[:, :6].abs().sum() > 0


def test_analytic_values():
    target = torch.randn(2, 4, 48)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert mae_loss(target, target, mask, norm_pix=False).item() == pytest.approx(0.0, abs=1e-7)
    # predicting 0 for standardised targets: mean of t^2 = (P - 1) / P * var / (var + eps)
    assert mae_loss(torch.zeros_like(target), target * 10, mask, norm_pix=True).item() == pytest.approx(47 / 48, rel=1e-4)
    assert mae_loss(torch.ones_like(target), torch.zeros_like(target), mask, norm_pix=False).item() == pytest.approx(1.0)
