"""The ViT with ``dynamic_img_size``: local crops of any size, position embedding resampled to their grid."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.backbones.vit import VisionTransformer, resampled_sincos_pos_embed_2d, sincos_pos_embed_2d


def test_resampled_embedding_equals_the_base_on_the_base_grid():
    torch.testing.assert_close(resampled_sincos_pos_embed_2d(32, 6, 6, 6), sincos_pos_embed_2d(32, 6), atol=1e-5, rtol=0)


def test_resampled_embedding_on_a_smaller_grid_spans_the_same_extent():
    """Cell centres of a 2x2 grid over a 4x4 base grid sit at 0.5 and 2.5: the mean of base positions."""
    small = resampled_sincos_pos_embed_2d(16, 2, 2, 4)
    row_coords = torch.tensor([0.5, 0.5, 2.5, 2.5])
    omega = 1.0 / 10000 ** (torch.arange(4) / 4)
    torch.testing.assert_close(small[:, :4], torch.sin(row_coords[:, None] * omega[None]))


def test_dynamic_vit_takes_local_crops_and_a_fixed_one_does_not():
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, dynamic_img_size=True)
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    assert vit.forward_tokens(torch.randn(2, 3, 8, 8)).shape == (2, 1 + 4, 32)
    assert vit.forward_tokens(torch.randn(2, 3, 7, 7)).shape == (2, 1 + 1, 32)  # floor, as the patch convolution
    fixed = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="16x16"):
        fixed(torch.randn(2, 3, 8, 8))
    fixed.load_state_dict(vit.state_dict())  # same parameters: the option changes no weights
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fixed.eval()(x), vit.eval()(x))
