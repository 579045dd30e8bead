"""data=imagenet and data=imagenet100 on a tiny made-up ImageFolder tree: 224-px ImageNet settings, the shipped
ImageNet-100 class list selected from the full tree, and a clear error when the tree lacks classes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from PIL import Image

from hydra.errors import InstantiationException

from ssl_lightning.config import ConfigError, find_config_error
from ssl_lightning.data.datasets import class_list, labels_of

IMAGENET100 = class_list("imagenet100")


def tree(root: Path, classes: list[str]) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        Image.new("RGB", (12, 10), (len(name) * 9 % 255, 20, 30)).save(root / name / "0.png")
    return root


def test_the_shipped_list_is_the_cmc_imagenet100():
    assert len(IMAGENET100) == len(set(IMAGENET100)) == 100
    assert all(c.startswith("n") and len(c) == 9 for c in IMAGENET100)
    assert IMAGENET100[:3] == ["n02869837", "n01749939", "n02488291"]  # CMC's (and solo-learn's) order


def test_imagenet_preset_is_imagenet_scale(make_cfg):
    cfg = make_cfg("data=imagenet", tiny=False)
    assert (cfg.data.image_size, cfg.data.num_classes, cfg.data.small_images, cfg.data.eval_crop_ratio) == (224, 1000, False, 0.875)
    assert cfg.data.train_dir.endswith("imagenet/train") and cfg.data.classes is None


def test_imagenet100_selects_its_classes_from_a_full_tree(make_cfg, tmp_path):
    root = tree(tmp_path / "train", ["n00000001", *IMAGENET100, "n99999999"])  # two classes that are not selected
    cfg = make_cfg("data=imagenet100", f"data.train_dir={root}", f"data.val_dir={root}", "data.image_size=8",
                   "data.batch_size=4", tiny=False)
    dm = instantiate(cfg.data)
    train = dm.split("train")
    assert len(train) == 100 and train.classes == sorted(IMAGENET100)
    assert sorted(set(labels_of(train).tolist())) == list(range(100))
    path, label = train.samples[0]
    assert Path(path).parent.name == sorted(IMAGENET100)[0] and label == 0
    image, _ = dm.split("val")[99]
    assert image.size == (12, 10)


def test_a_tree_without_the_classes_fails_naming_them(make_cfg, tmp_path):
    root = tree(tmp_path / "train", IMAGENET100[:97])
    cfg = make_cfg("data=imagenet100", f"data.train_dir={root}", f"data.val_dir={root}", tiny=False)
    with pytest.raises(ConfigError, match=r"lacks 3 of the 100 classes that data.classes selects: n\d{8}, n\d{8}, n\d{8}"):
        instantiate(cfg.data).split("train")


@pytest.mark.parametrize("classes, message", [
    ("imagenet1000", "data.classes='imagenet1000' is not allowed"),
    ([], "a non-empty list of distinct class folder names"),
    (["a", "a"], "a non-empty list of distinct class folder names"),
])
def test_bad_class_lists_are_named(classes, message):
    with pytest.raises(ConfigError, match=message):
        class_list(classes)


def test_class_count_must_match(make_cfg, tmp_path):
    root = tree(tmp_path / "train", IMAGENET100)
    cfg = make_cfg("data=imagenet100", f"data.train_dir={root}", f"data.val_dir={root}", "data.num_classes=10", tiny=False)
    with pytest.raises(InstantiationException) as error:
        instantiate(cfg.data)
    assert "data.num_classes=10 is not allowed: 100, the number of classes" in str(find_config_error(error.value))
