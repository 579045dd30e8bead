"""Every config in conf/ composes and instantiates; method=NAME picks compatible defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from ssl_lightning.config import config_dir

CONF = Path(config_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


METHODS = options("method")
IMAGE_METHODS = [m for m in METHODS if m not in ("mlm", "clm")]
TEXT = ["data=text", "backbone.vocab_size=64"]  # the vocabulary size comes from the data's tokenizer at train time


def test_groups_exist():
    for group in ("method", "backbone", "data", "trainer", "logger", "callbacks", "experiment", "augment"):
        assert (CONF / group).is_dir(), group
    assert {"simclr", "byol"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_and_instantiates(make_cfg, method):
    cfg = make_cfg(f"method={method}", *(TEXT if method not in IMAGE_METHODS else []))
    backbone = instantiate(cfg.backbone)
    module = instantiate(cfg.method, backbone=backbone)
    assert module.backbone is backbone


@pytest.mark.parametrize("backbone", [b for b in options("backbone") if not b.startswith("text_")])  # text: tests/backbones
def test_every_backbone_instantiates_and_exposes_num_features(make_cfg, backbone):
    import torch

    cfg = make_cfg(f"backbone={backbone}", "data.image_size=32")
    model = instantiate(cfg.backbone).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, model.num_features)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("data", [d for d in options("data") if d not in ("text", "tinyshakespeare")])  # text: tests/data
def test_every_data_config_instantiates_without_reading_data(make_cfg, data, tmp_path):
    # ImageFolder checks its directories exist at construction; empty ones are enough here.
    extra = [f"data.train_dir={tmp_path}", f"data.val_dir={tmp_path}"] if data in ("imagefolder", "imagenet", "imagenet100") else []
    cfg = make_cfg(f"data={data}", *extra)
    dm = instantiate(cfg.data, train_transform=instantiate(cfg.augment))
    assert dm.batch_size >= 1 and len(dm.mean) == 3
    assert instantiate(cfg.augment).size == cfg.data.image_size


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks"])
def test_every_trainer_logger_callbacks_option_instantiates(make_cfg, group):
    for option in options(group):
        cfg = make_cfg(f"{group}={option}")
        node = cfg[group]
        if group == "trainer":  # as train.py builds it: the preset's own callbacks go through trainer_callbacks
            from ssl_lightning.train import trainer_callbacks

            trainer = instantiate(node, accelerator="cpu", callbacks=trainer_callbacks(cfg))
            assert trainer.max_epochs == node.max_epochs
        else:
            assert all(instantiate(v) is not None for v in node.values())


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}", tiny=False)
    if "vocab_size" in cfg.backbone:  # language models: set from the data's tokenizer at train time
        cfg.backbone.vocab_size = 65
    if cfg.backbone.get("depth", 0) > 12:  # ViT-L/H presets (I-JEPA ViT-H/14: 2 x 630M parameters): 1 block suffices here
        cfg.backbone.depth = 1
    instantiate(cfg.method, backbone=instantiate(cfg.backbone))


def test_unknown_option_lists_the_available_ones(make_cfg):
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg("method=simclrr")
    message = str(info.value)
    assert "Could not find 'method/simclrr'" in message
    for name in ("byol", "simclr"):
        assert name in message


def test_method_selects_its_augmentation_and_user_choice_wins(make_cfg):
    assert make_cfg("method=byol").augment.views[0].blur_prob == 1.0
    assert make_cfg("method=simclr").augment.views == [{}, {}]
    assert make_cfg("method=byol", "augment=simclr").augment.views == [{}, {}]


def test_user_facing_keys_are_stable(make_cfg):
    cfg = make_cfg(tiny=False)
    for key in ("data.batch_size", "data.num_workers", "trainer.max_epochs", "trainer.max_steps", "trainer.devices",
                "trainer.precision", "method.optimizer.lr"):
        node, *path = key.split(".")
        value = cfg[node]
        for part in path:
            assert part in value, key
            value = value[part]


def test_default_run_is_simclr_on_digits_with_resnet18(make_cfg):
    cfg = make_cfg(tiny=False)
    assert cfg.method._target_.endswith("SimCLR")
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.backbone.name == "resnet18" and cfg.backbone.cifar_stem is True


@pytest.mark.parametrize("method", ["mlm", "clm"])
def test_language_methods_select_text_data_backbone_and_callbacks(make_cfg, method):
    cfg = make_cfg(f"method={method}", tiny=False)
    assert cfg.get("augment") is None and cfg.data._target_.endswith("TextDataModule")
    assert cfg.backbone._target_.endswith("TextTransformer") and set(cfg.callbacks) == {"model_checkpoint", "text_sample", "progress_bar"}
    assert make_cfg(f"method={method}", "data=tinyshakespeare", tiny=False).data.path.endswith("tinyshakespeare/input.txt")
