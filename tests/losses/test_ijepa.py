"""I-JEPA's loss against a slow reference written from the paper (Eq. 1) and the official code, and analytic values."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_lightning.losses import block_targets, ijepa_loss


def reference_targets(tokens, target_ids):
    """Per image, per block, per patch: normalise the token over its D features (mean 0, variance 1, no affine)."""
    B, M, Nt = target_ids.shape
    out = torch.empty(B, M, Nt, tokens.shape[-1], dtype=torch.float64)
    for b in range(B):
        for m in range(M):
            for j in range(Nt):
                t = tokens[b, int(target_ids[b, m, j])].double()
                out[b, m, j] = (t - t.mean()) / math.sqrt(t.var(unbiased=False) + 1e-5)
    return out


def reference_loss(pred, target, kind):
    """Eq. 1: (1/M) sum_i sum_{j in B_i} d(s_hat_j, s_j), averaged over images, per patch and feature; d is the
    squared error (paper) or Huber with beta 1 (official ``F.smooth_l1_loss``)."""
    B, M, Nt, D = pred.shape
    total = 0.0
    for b in range(B):
        for i in range(M):
            for j in range(Nt):
                for d in range(D):
                    e = float(pred[b, i, j, d]) - float(target[b, i, j, d])
                    total += e * e if kind == "l2" else (0.5 * e * e if abs(e) < 1 else abs(e) - 0.5)
    return total / (B * M * Nt * D)


def test_block_targets_are_layer_normalised_tokens_at_the_target_patches():
    g = torch.Generator().manual_seed(0)
    tokens = 3 * torch.randn(2, 16, 8, generator=g) + 1
    target_ids = torch.stack([torch.randperm(16, generator=g)[:6].reshape(2, 3) for _ in range(2)])  # (2, 2, 3)
    out = block_targets(tokens, target_ids)
    assert out.shape == (2, 2, 3, 8)
    torch.testing.assert_close(out.double(), reference_targets(tokens, target_ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 2, 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
def test_loss_matches_the_slow_reference(kind):
    g = torch.Generator().manual_seed(1)
    pred, target = 1.5 * torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    assert ijepa_loss(pred, target, kind).item() == pytest.approx(reference_loss(pred, target, kind), rel=1e-5)


def test_analytic_values():
    target = torch.randn(2, 4, 3, 8)
    for kind in ("smooth_l1", "l2"):
        assert ijepa_loss(target.clone(), target, kind).item() == 0.0
    # a constant error c everywhere: Huber gives c^2 / 2 for |c| < 1 and |c| - 1/2 beyond; the squared error c^2
    assert ijepa_loss(target + 0.5, target, "smooth_l1").item() == pytest.approx(0.125, rel=1e-5)
    assert ijepa_loss(target - 3.0, target, "smooth_l1").item() == pytest.approx(2.5, rel=1e-5)
    assert ijepa_loss(target + 0.5, target, "l2").item() == pytest.approx(0.25, rel=1e-5)


def test_gradient_flows_to_the_prediction_only_and_fp32_under_bf16():
    pred = torch.randn(1, 2, 3, 4, requires_grad=True)
    target = torch.randn(1, 2, 3, 4, requires_grad=True)
    ijepa_loss(pred.bfloat16(), target.bfloat16()).backward()
    assert pred.grad is not None and target.grad is None
    assert ijepa_loss(pred.bfloat16(), target.bfloat16()).dtype == torch.float32


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind='l1'"):
        ijepa_loss(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), "l1")
