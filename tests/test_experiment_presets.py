"""Every reproduction preset (conf/experiment/<method>_{cifar10,imagenet100,imagenet}.yaml) composes,
instantiates and trains 2 steps on small made-up images of its resolution class with its own heads, optimizer
and schedule; its reference block is complete; it states only what differs from the method, backbone and data
defaults it composes; the end of the run prints ours next to the reference."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssl_lightning.config import config_dir
from ssl_lightning.data.datasets import class_list
from ssl_lightning.reference import compare, missing_keys
from ssl_lightning.train import train

EXPERIMENTS = Path(config_dir()) / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if p.stem.endswith(("_cifar10", "_imagenet100", "_imagenet")))
# a representative set runs by default (a CIFAR ResNet with multi-crop, a CIFAR ViT, an ImageNet-100 tree with the
# class selection, an ImageNet ViT); the rest is slow-marked (each is 1-5 minutes on a loaded 2-core CPU)
DEFAULT = {"swav_cifar10", "mae_cifar10", "barlow_twins_imagenet100", "mocov3_vit_imagenet"}
# smaller heads / vocabularies / models where the preset's own would make a CPU step slow (the optimizer,
# schedule and every other setting stay the preset's)
SHRINK = {
    "mae_cifar10": ["backbone.depth=2"], "beit_cifar10": ["backbone.depth=2", "method.vocab_size=16"],
    "mae_imagenet": ["+backbone.depth=2", "method.decoder_depth=1"],
    "beit_imagenet": ["+backbone.depth=2", "method.vocab_size=16"],
    "mocov3_vit_imagenet": ["+backbone.depth=2"],
}


def test_there_is_a_preset_per_method_and_dataset():
    image = ["simclr", "byol", "moco", "mocov3", "simsiam", "swav", "barlow_twins", "vicreg", "mae", "beit", "rotation", "jigsaw"]
    joint = ["simclr", "byol", "moco", "mocov3", "simsiam", "swav", "barlow_twins", "vicreg"]
    expected = {f"{m}_cifar10" for m in image} | {f"{m}_imagenet100" for m in joint} | {"mocov3_vit_imagenet", "mae_imagenet", "beit_imagenet"}
    assert expected <= set(PRESETS)


def preset(name: str):
    return OmegaConf.load(EXPERIMENTS / f"{name}.yaml")


def choices(name: str) -> list[str]:
    """The group choices of a preset's defaults list, e.g. ['method=byol', 'data=cifar10']."""
    return [f"{key.replace('override /', '')}={value}" for entry in preset(name).defaults for key, value in entry.items()]


@pytest.mark.parametrize("name", PRESETS)
def test_reference_block_is_complete(make_cfg, name):
    reference = OmegaConf.to_container(make_cfg(f"experiment={name}", tiny=False).reference)
    assert missing_keys(reference) == []
    value = reference["value"]
    assert value is None and reference["source"].startswith("none: ") or 0 < value < 100  # top-1 %, or said why none


@pytest.mark.parametrize("name", PRESETS)
def test_preset_states_only_what_it_changes(make_cfg, name):
    """Every value a preset sets differs from what its method / backbone / data defaults already give."""
    base = make_cfg(*choices(name), tiny=False)
    body = OmegaConf.to_container(preset(name))
    body.pop("defaults"), body.pop("reference")

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    same = [path for path, value in leaves(body) if OmegaConf.select(base, path, default="<absent>") == value]
    assert same == [], f"{name} repeats defaults: {same}"


def image_tree(root: Path, classes: list[str], size: int, per_class: int = 1) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            g = torch.Generator().manual_seed(i * 7 + j)
            pixels = (torch.rand(size, size, 3, generator=g) * 255).byte().numpy()
            Image.fromarray(pixels).save(root / name / f"{j}.png")
    return root


def small_overrides(name: str, tmp_path: Path) -> list[str]:
    """The preset on made-up images of its resolution class: 32 px for CIFAR-10 presets (synthetic data with
    CIFAR's stem and blur rule); for ImageNet-scale presets an ImageFolder tree at 64 px, the ImageNet stem and
    blur (ImageNet-100: the shipped class list selected from a tree holding those 100 classes and one more)."""
    common = ["trainer.max_steps=2", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32-true",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "data.num_workers=0",
              "~callbacks.knn", "~callbacks.embedding_projector", "~callbacks.view_grid", *SHRINK.get(name, [])]
    batch = 16 if name.startswith("moco_") else 8  # MoCo's one-device Shuffle-BN: 8 groups of at least 2 images
    if name.endswith("_cifar10"):
        return common + ["data=synthetic", "data.image_size=32", f"data.batch_size={batch}", f"data.num_samples={2 * batch}"]
    classes = class_list("imagenet100") + ["n99999999"] if name.endswith("_imagenet100") else ["a", "b", "c", "d"]
    tree = image_tree(tmp_path / "imagenet", classes, 72, per_class=1 if len(classes) > 4 else 8)
    extra = [] if name.endswith("_imagenet100") else ["data.num_classes=4"]
    return common + [f"data.train_dir={tree}", f"data.val_dir={tree}", "data.image_size=64", f"data.batch_size={batch}",
                     "+data.eval_batch_size=64", *extra]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in DEFAULT else [pytest.mark.slow]) for n in PRESETS])
def test_preset_trains_two_steps_and_prints_its_reference(make_cfg, tmp_path, caplog, name):
    cfg = make_cfg(f"experiment={name}", *small_overrides(name, tmp_path), tiny=False)
    assert cfg.data.small_images == name.endswith("_cifar10")
    with caplog.at_level(logging.INFO):
        metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("reference: "))
    assert line == "reference: " + compare(OmegaConf.to_container(cfg.reference), metrics)
    assert cfg.reference.metric in line


def test_compare_formats_ours_against_the_reference():
    ref = {"metric": "val/knn_top1", "value": 86.9, "label": "lightly, bs128, 200 ep", "source": "lightly"}
    assert compare(ref, {"val/knn_top1": 84.1}) == "val/knn_top1 84.1 vs 86.9 (lightly, bs128, 200 ep), gap -2.8"
    assert compare(ref, {}).startswith("val/knn_top1 not measured vs 86.9 (lightly, bs128, 200 ep): python -m ssl_lightning.eval")
    assert compare({**ref, "value": None, "source": "none: nobody published one"}, {"val/knn_top1": 50.0}) == \
        "val/knn_top1 50.0 (no published reference: none: nobody published one)"
    assert compare(None, {"val/knn_top1": 1.0}) is None


def test_eval_protocol_reference_runs_the_references_protocol(tmp_path):
    """``python -m ssl_lightning.eval protocol=reference``: the protocol comes from the checkpoint's run config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ssl_lightning.config import find_config_error

    def checkpoint(reference) -> str:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.ckpt"
        torch.save({"state_dict": {}, "ssl_lightning": {"config": {"reference": reference}, "method": "BYOL"}}, path)
        return str(path)

    knn = {"metric": "val/knn_top1", "value": 86.9, "protocol": {"eval": "knn", "k": 20, "eval_epochs": None}}
    linear = {"metric": "linear_top1", "value": 73.2, "protocol": {"eval": "linear", "k": None, "eval_epochs": 90}}
    finetune = {"metric": "finetune_top1", "value": 83.6, "protocol": {"eval": "finetune", "k": None, "eval_epochs": None}}
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        make = lambda ckpt: instantiate(compose("eval", [f"ckpt={ckpt}", "protocol=reference"]).protocol)  # noqa: E731
        protocol = make(checkpoint(knn))
        assert (protocol.name, protocol.k) == ("knn", 20)
        protocol = make(checkpoint(linear))
        assert (protocol.name, protocol.epochs) == ("linear", 90)
        protocol = make(checkpoint(finetune))
        assert (protocol.name, protocol.epochs) == ("finetune", 100)
        with pytest.raises(Exception) as error:
            make(checkpoint(None))
    assert "protocol=reference is not allowed" in str(find_config_error(error.value))


def test_summarize_shows_ours_next_to_the_reference(tmp_path):
    import json

    from ssl_lightning.summarize import summarize

    for job, knn in (("0", 84.1), ("1", 85.0)):
        run = tmp_path / job
        run.mkdir()
        OmegaConf.save(OmegaConf.create({"reference": {"metric": "val/knn_top1", "value": 86.9, "label": "lightly, bs128, 200 ep",
                                                        "source": "lightly"}}), run / "config.yaml")
        (run / "metrics.json").write_text(json.dumps({"global_step": 10, "metrics": {"val/knn_top1": knn}}))
    text, _, runs = summarize([tmp_path], out=tmp_path / "s.csv")
    assert [r["reference"] for r in runs] == ["val/knn_top1 84.1 vs 86.9 (lightly, bs128, 200 ep), gap -2.8",
                                              "val/knn_top1 85.0 vs 86.9 (lightly, bs128, 200 ep), gap -1.9"]
    assert "reference" in text.splitlines()[1] and "gap -2.8" in text
