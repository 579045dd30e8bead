"""Masked image modelling: bad input fails before training with a message naming the value."""

import functools

import pytest
import torch
from hydra.errors import InstantiationException

from ssl_lightning.config import ConfigError
from ssl_lightning.tokenizers import PatchKMeansTokenizer, save_tokenizer
from ssl_lightning.train import train
from tests.conftest import error_of


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=mae", "method.mask_ratio=1.0"], "method.mask_ratio=1.0 is not allowed: a fraction of patches strictly between 0 and 1"),
        (["method=mae", "method.mask_ratio=0"], "method.mask_ratio=0 is not allowed: a fraction of patches strictly between 0 and 1"),
        (["method=beit", "method.mask_ratio=-0.4"], "method.mask_ratio=-0.4 is not allowed: a fraction of patches strictly between 0 and 1"),
        (["method=mae", "backbone=resnet18"], "masked image modelling needs a ViT backbone"),
        (["method=beit", "backbone=resnet18"], "masked image modelling needs a ViT backbone"),
        (["method=mae", "data.image_size=15"], "backbone.patch_size=2 is not allowed: a positive divisor of the image size 15"),
        (["method=beit", "data.image_size=18", "backbone.patch_size=4"], "backbone.patch_size=4 is not allowed: a positive divisor of the image size 18"),
        (["method=mae", "backbone=vit_tiny", "data.image_size=8", "method.mask_ratio=0.9"], "masks 4"),
        (["method=beit", "method.tokenizer_path=/no/such/tokenizer.pt"],
         "method.tokenizer_path='/no/such/tokenizer.pt' does not exist: create it with `python -m ssl_lightning.fit_tokenizer"),
    ],
)
def test_bad_values_are_named(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)


def test_non_vit_backbone_is_rejected_by_the_method_too():
    from ssl_lightning.backbones import resnet
    from ssl_lightning.methods import MAE

    with pytest.raises(ConfigError, match="backbone='ResNet' is not allowed: a ViT"):
        MAE(resnet("resnet18"), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))


@pytest.mark.parametrize(("tokenizer", "message"), [
    (PatchKMeansTokenizer(32, 4, 16), "made for patch_size=4 but this run has backbone.patch_size=2"),
    (PatchKMeansTokenizer(32, 2, 32), "made for image_size=32 but this run has data.image_size=16"),
    (PatchKMeansTokenizer(64, 2, 16), "made for vocab_size=64 but this run has method.vocab_size=32"),
])
def test_mismatched_tokenizer_file(make_cfg, tmp_path, tokenizer, message):
    tokenizer.set_codebook(torch.rand_like(tokenizer.codebook))
    path = save_tokenizer(tokenizer, tmp_path / "tok.pt")
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg("method=beit", "method.vocab_size=32", f"method.tokenizer_path={path}", "trainer.max_epochs=1"))
    assert message in error_of(info.value)

