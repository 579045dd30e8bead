"""Fine-tuning: layer-wise LR decay for ViTs, and a whole network that learns."""

import lightning as L
import pytest
from torch import nn

from ssl_lightning.backbones import resnet, vit
from ssl_lightning.config import ConfigError
from ssl_lightning.data import SyntheticDataModule
from ssl_lightning.protocols import FineTune
from ssl_lightning.protocols.finetune import Classifier, layer_decay_groups, set_drop_path


def test_vit_layers_get_geometrically_decayed_lrs():
    model = Classifier(vit("tiny", image_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2), num_classes=5)
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert sorted(lr_of) == sorted(id(p) for p in named.values())  # every parameter exactly once
    expected = {  # depth 3: patch embedding / [CLS] at layer 0, block i at i + 1, norm and head at 4
        "backbone.patch_embed.weight": 0.5**4, "backbone.cls_token": 0.5**4, "backbone.blocks.0.attn.qkv.weight": 0.5**3,
        "backbone.blocks.1.mlp.0.weight": 0.5**2, "backbone.blocks.2.norm1.weight": 0.5, "backbone.norm.weight": 1.0,
        "head.weight": 1.0, "head.bias": 1.0,
    }
    for name, lr in expected.items():
        assert lr_of[id(named[name])] == pytest.approx(lr), name
    assert wd_of[id(named["backbone.blocks.0.attn.qkv.weight"])] == 0.05
    for name in ("backbone.cls_token", "backbone.norm.weight", "backbone.blocks.0.attn.qkv.bias", "head.bias"):
        assert wd_of[id(named[name])] == 0.0, name


def test_resnet_gets_one_lr():
    model = Classifier(resnet("resnet18", cifar_stem=True), num_classes=3)
    groups = layer_decay_groups(model, lr=0.1, weight_decay=0.05, layer_decay=0.5)
    assert {g["lr"] for g in groups} == {0.1}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_drop_path_rises_linearly_over_blocks():
    backbone = vit("tiny", image_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)
    set_drop_path(backbone, 0.2)
    assert [b.drop_path for b in backbone.blocks] == pytest.approx([0.0, 0.1, 0.2])


class TinyConvNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 32


def test_finetuning_learns_the_synthetic_classes():
    """Colour-field classes are learnable end to end: the whole network fine-tuned from random init (the
    frozen-feature protocols could not do that) reaches high validation accuracy."""
    L.seed_everything(0, verbose=False)
    dm = SyntheticDataModule(num_samples=96, image_size=16, num_classes=4, batch_size=16, num_workers=0,
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment={"hflip_prob": 0.0})
    fabric = L.Fabric(accelerator="cpu", devices=1)
    protocol = FineTune(epochs=15, batch_size=16, lr=0.5, warmup_epochs=1, label_smoothing=0.0, crop_scale=(0.5, 1.0))
    metrics = protocol.run(TinyConvNet(), dm, fabric, seed=0)
    assert metrics["top1"] >= 90.0, metrics
    assert metrics["train_images"] == 96


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer_decay": 0.0}, "protocol.layer_decay=0.0 is not allowed: a factor in (0, 1]"),
    ({"layer_decay": 1.5}, "protocol.layer_decay=1.5 is not allowed"),
    ({"label_smoothing": 1.0}, "protocol.label_smoothing=1.0 is not allowed"),
    ({"batch_size": 0}, "protocol.batch_size=0 is not allowed: an integer >= 1"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError) as info:
        FineTune(**kwargs)
    assert message in str(info.value)
