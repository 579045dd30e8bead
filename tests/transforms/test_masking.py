"""Mask generators: exact counts, inverse permutations, block constraints, determinism in the data pipeline."""

import pytest
import torch
from PIL import Image

from ssl_lightning.config import ConfigError
from ssl_lightning.data import TransformedDataset
from ssl_lightning.transforms import BlockwiseMasking, MaskedImageTransform, RandomMasking, mask_to_ids, random_masking


@pytest.mark.parametrize(("n", "ratio"), [(64, 0.75), (16, 0.6), (196, 0.9), (49, 0.5), (256, 0.1)])
def test_random_masking_masks_exactly_round_n_ratio_per_sample(n, ratio):
    side = int(n**0.5)
    masks = torch.stack([RandomMasking(ratio)(side, side) for _ in range(32)])
    assert masks.dtype == torch.bool and masks.shape == (32, n)
    assert (masks.sum(dim=1) == round(n * ratio)).all()
    assert len({tuple(m.tolist()) for m in masks}) > 1  # per-sample masks


def test_random_masking_is_uniform_over_patches():
    torch.manual_seed(0)
    masks = torch.stack([RandomMasking(0.75)(4, 4) for _ in range(4000)]).float()
    assert torch.allclose(masks.mean(dim=0), torch.full((16,), 0.75), atol=0.04)


def test_ids_restore_inverts_the_shuffle():
    ids_keep, ids_restore, mask = random_masking(5, 16, 12, generator=torch.Generator().manual_seed(0))
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert (torch.gather(ids_shuffle, 1, ids_restore) == torch.arange(16)).all()
    assert (ids_keep == ids_shuffle[:, :4]).all()
    assert not torch.gather(mask, 1, ids_keep).any() and (mask.sum(dim=1) == 12).all()
    x = torch.randn(5, 16, 3)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, 3)), x)


def test_mask_to_ids_keeps_the_visible_patches_and_restores_grid_order():
    mask = random_masking(4, 16, 12, generator=torch.Generator().manual_seed(1))[2]
    ids_keep, ids_restore = mask_to_ids(mask, 12)
    assert ids_keep.shape == (4, 4) and not torch.gather(mask, 1, ids_keep).any()
    x = torch.randn(4, 16, 2)
    visible = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, 2))
    masked = torch.stack([x[b][mask[b]] for b in range(4)])  # the decoder appends mask tokens after the visible
    restored = torch.gather(torch.cat([visible, masked], dim=1), 1, ids_restore[..., None].expand(-1, -1, 2))
    torch.testing.assert_close(restored, x)


def test_mask_to_ids_rejects_a_wrong_count():
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :12] = True
    mask[1, 12] = True
    with pytest.raises(RuntimeError, match="exactly num_masked"):
        mask_to_ids(mask, 12)


@pytest.mark.parametrize(("grid", "min_patches", "smallest"), [(14, 16, 16), (8, None, 5), (16, None, 21)])
def test_blockwise_blocks_respect_the_paper_constraints(grid, min_patches, smallest):
    torch.manual_seed(0)
    masking = BlockwiseMasking(0.4, min_patches)
    target = round(0.4 * grid * grid)
    counts = []
    for _ in range(200):
        mask, blocks = masking.sample(grid, grid)
        union = torch.zeros(grid, grid, dtype=torch.bool)
        for top, left, h, w in blocks:
            assert h * w >= smallest and 0.3 <= h / w <= 1 / 0.3
            assert 0 <= top and top + h <= grid and 0 <= left and left + w <= grid
            union[top : top + h, left : left + w] = True
        assert torch.equal(union, mask)
        counts.append(int(mask.sum()))
    assert max(counts) <= target  # never above the budget ...
    assert sum(counts) / len(counts) >= 0.9 * target  # ... and about 40% on average


def test_blockwise_masks_are_blocks_not_scattered_patches():
    torch.manual_seed(0)
    mask, blocks = BlockwiseMasking(0.4, 16).sample(14, 14)
    assert 1 <= len(blocks) <= 78 // 16 + 2


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2, True])
def test_mask_ratio_outside_zero_one_is_a_config_error(ratio):
    for cls in (RandomMasking, BlockwiseMasking):
        with pytest.raises(ConfigError, match="method.mask_ratio=.* is not allowed: a fraction of patches strictly between 0 and 1"):
            cls(ratio)


def test_a_ratio_that_masks_every_patch_of_a_small_grid_is_a_config_error():
    with pytest.raises(ConfigError, match="masks 4"):
        MaskedImageTransform(RandomMasking(0.9), patch_size=8, size=16)


def test_transform_needs_a_patch_size_that_divides_the_image():
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        MaskedImageTransform(RandomMasking(0.75), patch_size=None, size=16)
    with pytest.raises(ConfigError, match="backbone.patch_size=4 is not allowed: a positive divisor of the image size 30"):
        MaskedImageTransform(RandomMasking(0.75), patch_size=4, size=30)


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return Image.fromarray((torch.rand(20, 20, 3, generator=g) * 255).byte().numpy()), i


def test_masks_and_views_are_a_function_of_the_sample_seed():
    transform = MaskedImageTransform(BlockwiseMasking(0.4, None), patch_size=2, size=16, crop_scale=[0.2, 1.0])
    dataset = TransformedDataset(_Images(), transform)
    (image, mask), label = dataset[(1, 123)]
    assert image.shape == (3, 16, 16) and mask.shape == (64,) and label == 1
    (image2, mask2), _ = dataset[(1, 123)]
    assert torch.equal(image, image2) and torch.equal(mask, mask2)
    masks = {tuple(dataset[(1, s)][0][1].tolist()) for s in range(8)}
    assert len(masks) > 1
