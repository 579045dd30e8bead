import math

import pytest
import torch

from ssl_lightning.losses import beit_loss


def beit_reference(logits_full, tokens, mask):
    """Bao et al. (2022), Eq. 1: -sum over masked positions of log p(token | corrupted image), averaged over
    the masked positions. ``logits_full`` (B, N, V); loops, float64."""
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        for n in range(tokens.shape[1]):
            if mask[b, n]:
                row = logits_full[b, n].double()
                total -= (row[tokens[b, n]] - torch.logsumexp(row, dim=0)).item()
                count += 1
    return total / count


def test_matches_paper_reference_on_masked_positions():
    torch.manual_seed(0)
    logits_full, tokens = torch.randn(3, 16, 10) * 3, torch.randint(10, (3, 16))
    mask = torch.rand(3, 16) < 0.4
    loss = beit_loss(logits_full, tokens, mask)
    assert loss.item() == pytest.approx(beit_reference(logits_full, tokens, mask), rel=1e-5)


def test_tokens_of_visible_patches_do_not_matter():
    torch.manual_seed(0)
    tokens, mask = torch.randint(10, (2, 16)), torch.rand(2, 16) < 0.4
    logits = torch.randn(2, 16, 10)
    other = torch.where(mask, tokens, (tokens + 3) % 10)
    assert beit_loss(logits, other, mask).item() == pytest.approx(beit_loss(logits, tokens, mask).item())


def test_analytic_values():
    tokens, mask = torch.randint(7, (2, 9)), torch.ones(2, 9, dtype=torch.bool)
    assert beit_loss(torch.zeros(2, 9, 7), tokens, mask).item() == pytest.approx(math.log(7))
    confident = torch.nn.functional.one_hot(tokens, 7).float() * 100
    assert beit_loss(confident, tokens, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_logits_of_unmasked_positions_do_not_matter():
    """The method scores a fixed number of positions per sample, some unmasked: they take no loss."""
    torch.manual_seed(0)
    logits, tokens, mask = torch.randn(2, 16, 10), torch.randint(10, (2, 16)), torch.rand(2, 16) < 0.4
    other = torch.where(mask[..., None], logits, torch.randn(2, 16, 10) * 5)
    assert beit_loss(other, tokens, mask).item() == pytest.approx(beit_loss(logits, tokens, mask).item())


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="must share their leading"):
        beit_loss(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long), torch.tensor([[True, False, True, False]]))
