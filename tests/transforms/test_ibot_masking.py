"""iBOT's masks: probability of masking, ratio range, block shapes; the masked multi-crop transform."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ssl_lightning.config import ConfigError
from ssl_lightning.transforms import MaskedMultiViewTransform, RandomRatioBlockwiseMasking


def test_half_of_the_crops_are_masked_at_ratios_within_the_range():
    torch.manual_seed(0)
    masking = RandomRatioBlockwiseMasking((0.1, 0.5), mask_prob=0.5)
    masking.validate(14, 14)
    masks = torch.stack([masking(14, 14) for _ in range(400)])  # (400, 196)
    ratios = masks.float().mean(dim=1)
    masked = ratios > 0
    assert 0.4 < masked.float().mean() < 0.6  # p = 0.5
    assert ratios[masked].min() >= 0.08 and ratios[masked].max() <= 0.5 + 1 / 196
    assert ratios[masked].std() > 0.05  # the ratio varies from crop to crop
    assert (ratios[masked] > 0.3).any() and (ratios[masked] < 0.2).any()


def test_blocks_respect_the_official_minimum_area_and_aspect():
    torch.manual_seed(1)
    masking = RandomRatioBlockwiseMasking((0.3, 0.5), mask_prob=1.0)
    for _ in range(50):
        _, blocks = masking.sample(14, 14)
        assert blocks
        for _, _, h, w in blocks:
            assert h * w >= 16 and 0.3 - 1e-9 <= h / w <= 1 / 0.3 + 1e-9 and h < 14 and w < 14


def test_prob_zero_never_masks():
    masking = RandomRatioBlockwiseMasking((0.1, 0.5), mask_prob=0.0)
    assert not torch.stack([masking(8, 8) for _ in range(20)]).any()


@pytest.mark.parametrize("bounds", [(0.0, 0.5), (0.2, 1.0), (0.5, 0.2), (0.1,), "0.3"])
def test_ratio_range_outside_zero_one_is_a_config_error(bounds):
    with pytest.raises(ConfigError, match="augment.masking.mask_ratio_range"):
        RandomRatioBlockwiseMasking(bounds)


def test_masked_multiview_transform_gives_views_then_global_masks():
    torch.manual_seed(0)
    transform = MaskedMultiViewTransform(
        RandomRatioBlockwiseMasking((0.1, 0.5), mask_prob=1.0), patch_size=4, num_masked_views=2, size=16,
        views=[{"count": 2}, {"count": 3, "size_ratio": 0.5}])
    out = transform(Image.new("RGB", (20, 20), (120, 30, 200)))
    assert [tuple(v.shape) for v in out[:-1]] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3
    assert out[-1].shape == (2, 16) and out[-1].dtype == torch.bool and out[-1].any(dim=1).all()
    assert transform.view_sizes == [16, 16, 8, 8, 8]
    with pytest.raises(ConfigError, match="backbone.patch_size"):
        MaskedMultiViewTransform(RandomRatioBlockwiseMasking(), patch_size=5, size=16)
    with pytest.raises(ConfigError, match="ViT"):
        MaskedMultiViewTransform(RandomRatioBlockwiseMasking(), patch_size=None, size=16)
