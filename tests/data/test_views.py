import pytest
import torch
from PIL import Image

from ssl_lightning.config import ConfigError
from ssl_lightning.transforms import MultiViewTransform

IMAGE = Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy())


def test_two_symmetric_views_of_the_crop_size():
    views = MultiViewTransform(size=24)(IMAGE)
    assert [v.shape for v in views] == [torch.Size([3, 24, 24])] * 2


def test_byol_asymmetric_blur_and_solarize_probabilities():
    t = MultiViewTransform(views=[{"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}], size=32)
    assert [(s.blur_prob, s.solarize_prob) for s in t.specs] == [(1.0, 0.0), (0.1, 0.2)]


def test_multicrop_counts_and_sizes():
    t = MultiViewTransform(views=[{"count": 2, "crop_scale": [0.14, 1.0]}, {"count": 4, "size_ratio": 0.5, "crop_scale": [0.05, 0.14]}], size=32)
    views = t(IMAGE)
    assert t.view_sizes == [32, 32, 16, 16, 16, 16] == [v.shape[-1] for v in views]


def test_data_overrides_apply_to_every_view_last():
    t = MultiViewTransform(views=[{"blur_prob": 1.0}, {"blur_prob": 0.1}], size=32, blur_prob=0.5, data_overrides={"blur_prob": 0.0})
    assert [s.blur_prob for s in t.specs] == [0.0, 0.0]


def test_normalisation_uses_mean_and_std():
    flat = Image.new("RGB", (8, 8), (255, 255, 255))
    t = MultiViewTransform(size=8, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    assert torch.allclose(t(flat)[0], torch.full((3, 8, 8), 2.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_scale": [0.5, 0.2]}, r"augment.crop_scale=\[0.5, 0.2\] is not allowed"),
        ({"blur_prob": 1.5}, r"augment.blur_prob=1.5 is not allowed: a probability in \[0, 1\]"),
        ({"views": [{"colour": 1}]}, r"augment.views=\['colour'\] is not allowed"),
        ({"sharpness": 0.3}, r"augment.sharpness=0.3 is not allowed"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MultiViewTransform(size=32, **kwargs)
