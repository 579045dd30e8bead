"""The ViT's masked-image-modelling paths: patch layout, visible-only encoding, mask-token replacement."""

import pytest
import torch

from ssl_lightning.backbones import VisionTransformer, patchify, unpatchify


def tiny_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**{"image_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, **kwargs}).eval()


@pytest.mark.parametrize(("size", "patch"), [(16, 4), (16, 2), (32, 4), (12, 3)])
def test_patchify_unpatchify_round_trip(size, patch):
    images = torch.randn(2, 3, size, size)
    patches = patchify(images, patch)
    assert patches.shape == (2, (size // patch) ** 2, 3 * patch**2)
    torch.testing.assert_close(unpatchify(patches, patch), images, rtol=0, atol=0)


def test_patchify_layout_is_row_major_patches_of_row_col_channel_pixels():
    images = torch.randn(1, 3, 8, 12)
    patches = patchify(images, 4)  # 2 rows x 3 columns of patches
    row, col = 1, 2
    expected = images[0, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4].permute(1, 2, 0).flatten()
    torch.testing.assert_close(patches[0, row * 3 + col], expected)
    torch.testing.assert_close(unpatchify(patches, 4, height=8), images)


def test_patchify_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 3, 10, 10), 4)


def test_encoder_sees_only_the_visible_tokens():
    vit = tiny_vit()
    seen = []
    vit.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    ids_keep = torch.stack([torch.randperm(16)[:4] for _ in range(3)])  # (B, 4) of 16 patches
    out = vit.forward_tokens(torch.randn(3, 3, 16, 16), ids_keep)
    assert seen == [torch.Size([3, 5, 32])]  # [CLS] + 4 visible tokens enter the transformer
    assert out.shape == (3, 5, 32)


def test_removed_patches_do_not_influence_the_encoding():
    vit = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    ids_keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    y = x.clone()
    y[0, :, 4:8, 0:4] = 9.0  # patch 4 of image 0 is removed; patch 4 of image 1 is kept
    a, b = vit.forward_tokens(x, ids_keep), vit.forward_tokens(y, ids_keep)
    torch.testing.assert_close(a[0], b[0])
    y[1, :, 4:8, 0:4] = 9.0
    assert not torch.allclose(vit.forward_tokens(y, ids_keep)[1], a[1])


def test_keeping_every_patch_in_any_order_equals_the_full_encoding():
    """Position embeddings are added before the gather, so the token order does not matter."""
    vit = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    perm = torch.stack([torch.randperm(16) for _ in range(2)])
    torch.testing.assert_close(vit.forward_tokens(x, perm)[:, 0], vit(x), atol=1e-5, rtol=1e-5)


def test_mask_token_replaces_masked_patch_embeddings():
    vit = tiny_vit()
    mask_token = torch.randn(1, 1, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [3, 7]] = True
    x = torch.randn(2, 3, 16, 16)
    tokens = vit.patch_tokens(x, mask, mask_token)
    torch.testing.assert_close(tokens[0, 3], mask_token[0, 0] + vit.pos_embed[0, 3])
    torch.testing.assert_close(tokens[1], vit.patch_tokens(x)[1])
    y = x.clone()
    y[0, :, 0:4, 12:16] = 5.0  # the pixels of masked patch 3 are never seen
    torch.testing.assert_close(vit.forward_tokens(y, bool_masked_pos=mask, mask_token=mask_token),
                               vit.forward_tokens(x, bool_masked_pos=mask, mask_token=mask_token))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_forward_contract_is_unchanged(pool):
    vit = tiny_vit(global_pool=pool)
    out = vit(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, vit.num_features) and torch.isfinite(out).all()
