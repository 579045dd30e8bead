"""What the data imposes depends on the image size, not on the folder format: blur (off below 64 px, each
method's paper blur at 224 px) and the evaluation crop (resize 256 / centre-crop 224 at ImageNet scale)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision import transforms as T

from ssl_lightning.transforms import eval_transform

# each multi-view method's paper blur per view at ImageNet scale
PAPER_BLUR = {
    "simclr": [0.5, 0.5], "moco": [0.5, 0.5], "simsiam": [0.5, 0.5], "byol": [1.0, 0.1], "mocov3": [1.0, 0.1],
    "mocov3_vit": [1.0, 0.1], "barlow_twins": [1.0, 0.1], "vicreg": [1.0, 0.1], "swav": [0.5] * 8,
}
FOLDER = ["data=imagefolder", "data.train_dir=.", "data.val_dir=."]


@pytest.mark.parametrize("method", sorted(PAPER_BLUR))
def test_imagefolder_at_224_keeps_every_papers_blur(make_cfg, method):
    transform = instantiate(make_cfg(f"method={method}", *FOLDER, "data.image_size=224", tiny=False).augment)
    assert [s.blur_prob for s in transform.view_specs] == PAPER_BLUR[method]


@pytest.mark.parametrize("data", [FOLDER, ["data=cifar10"], ["data=synthetic"]])
@pytest.mark.parametrize("method", ["byol", "simclr", "swav"])
def test_no_view_blurs_at_32_px(make_cfg, method, data):
    transform = instantiate(make_cfg(f"method={method}", *data, "data.image_size=32", tiny=False).augment)
    assert all(s.blur_prob == 0.0 for s in transform.view_specs)


def test_imagenet_preset_blurs_as_the_paper(make_cfg):
    transform = instantiate(make_cfg("method=byol", "data=imagenet", tiny=False).augment)
    assert [s.blur_prob for s in transform.view_specs] == [1.0, 0.1] and transform.size == 224


def test_eval_crop_follows_the_image_size():
    big, small = eval_transform(224, [0.5] * 3, [0.5] * 3, None), eval_transform(32, [0.5] * 3, [0.5] * 3, None)
    assert big.transforms[0].size == 256 and big.transforms[1].size == (224, 224)
    assert small.transforms[0].size == 32
    image = Image.new("RGB", (300, 400))
    assert big(image).shape == (3, 224, 224)


def test_bicubic_evaluation_where_the_official_code_uses_it(make_cfg):
    for method, mode in [("mae", "bicubic"), ("beit", "bicubic"), ("simclr", "bilinear"), ("barlow_twins", "bilinear")]:
        cfg = make_cfg(f"method={method}", "data=synthetic")
        assert cfg.data.eval_interpolation == mode, method
    t = eval_transform(224, [0.5] * 3, [0.5] * 3, None, "bicubic")
    assert t.transforms[0].interpolation == T.InterpolationMode.BICUBIC
    # bicubic and bilinear really differ on a sharp image
    image = Image.fromarray((torch.rand(300, 300, 3) * 255).byte().numpy())
    assert not torch.equal(t(image), eval_transform(224, [0.5] * 3, [0.5] * 3, None)(image))
