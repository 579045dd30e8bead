"""I-JEPA's predictor: one independent sequence per target block; positions, not contents, of the targets."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.heads import IJEPAPredictor


def make(**kwargs):
    torch.manual_seed(0)
    return IJEPAPredictor(grid_size=4, embed_dim=16, predictor_dim=8, depth=2, num_heads=2, **kwargs).eval()


def test_shapes_and_block_independence():
    """Block m's predictions depend on the context and block m's positions only: changing another block's
    positions leaves them unchanged, and a block's output equals the predictor run on that block alone."""
    predictor = make()
    context, context_ids = torch.randn(2, 5, 16), torch.stack([torch.arange(5), torch.arange(5, 10)])
    target_ids = torch.tensor([[[10, 11], [14, 15], [12, 13]], [[0, 1], [2, 3], [14, 15]]])  # (2, 3, 2)
    out = predictor(context, context_ids, target_ids)
    assert out.shape == (2, 3, 2, 16)
    moved = target_ids.clone()
    moved[:, 1] = torch.tensor([6, 7])
    out2 = predictor(context, context_ids, moved)
    torch.testing.assert_close(out2[:, [0, 2]], out[:, [0, 2]])
    assert not torch.allclose(out2[:, 1], out[:, 1])
    alone = predictor(context, context_ids, target_ids[:, 2:3])
    torch.testing.assert_close(alone[:, 0], out[:, 2])


def test_a_prediction_depends_on_the_context_and_its_position():
    predictor = make()
    context_ids = torch.arange(4)[None]
    target_ids = torch.tensor([[[8, 9]]])
    a = predictor(torch.randn(1, 4, 16), context_ids, target_ids)
    b = predictor(torch.randn(1, 4, 16), context_ids, target_ids)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a[0, 0, 0], a[0, 0, 1])  # same mask token, different positions


def test_official_initialisation():
    """Truncated normal (std 0.02) linear weights and mask token, zero biases; block l's output projections
    divided by sqrt(2 l) (``fix_init_weight``)."""
    torch.manual_seed(0)
    predictor = IJEPAPredictor(grid_size=8, embed_dim=192, predictor_dim=96, depth=4, num_heads=3)
    assert predictor.embed.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert predictor.mask_token.std().item() == pytest.approx(0.02, rel=0.25)
    assert predictor.embed.bias.abs().max().item() == 0.0
    for layer, block in enumerate(predictor.blocks, start=1):
        std = block.attn.proj.weight.std().item()
        assert std == pytest.approx(0.02 / math.sqrt(2 * layer), rel=0.1)
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_bad_width_is_named():
    with pytest.raises(ConfigError, match="method.predictor_dim=10 is not allowed"):
        IJEPAPredictor(grid_size=4, embed_dim=16, predictor_dim=10, depth=1, num_heads=3)
