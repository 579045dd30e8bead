"""Evaluation entry point: a pretrained backbone under kNN, linear or fine-tuning evaluation.

    python -m ssl_lightning.eval ckpt=outputs/DATE/TIME/checkpoints/last.ckpt protocol=knn
    python -m ssl_lightning.eval ckpt=backbone.pt protocol=linear data=cifar10 data.label_fraction=0.01
    python -m ssl_lightning.eval ckpt=... protocol=finetune protocol.epochs=100 fabric.devices=8

Results are printed as a table, written to ``<run dir>/results.json`` and logged to TensorBoard
(``eval/<protocol>_top1``, ``eval/<protocol>_top5`` and the protocol's curves).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import get_class, instantiate
from lightning.fabric.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ssl_lightning import launch
from ssl_lightning.checkpoint import PretrainedBackbone, load_pretrained
from ssl_lightning.config import ConfigError, config_dir, exit_on_config_error
from ssl_lightning.data import ImageDataModule
from ssl_lightning.data.datasets import labels_of
from ssl_lightning.table import format_table

log = logging.getLogger(__name__)


def check_data(cfg: DictConfig) -> None:
    target = cfg.data.get("_target_")
    try:
        cls = get_class(target)
    except Exception as e:
        raise ConfigError(f"data._target_={target!r} is not allowed: an importable datamodule class ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, ImageDataModule)):
        raise ConfigError(f"data={cls.__name__} is not allowed: the evaluation protocols need an image datamodule "
                          "(digits, synthetic, cifar10, cifar100, stl10, imagefolder)")


def check_labels(datamodule: ImageDataModule, protocol: str) -> None:
    """Both splits must have labels, all below ``data.num_classes`` (read without decoding images)."""
    for split in ("bank", "val"):
        labels = labels_of(datamodule.split(split))
        labelled = labels[labels >= 0]
        if labelled.size == 0:
            raise ConfigError(f"protocol={protocol} needs labelled images, but the {split} split of "
                              f"{type(datamodule).__name__} has none (every label is -1): evaluate on labelled data")
        if labelled.max() >= datamodule.num_classes:
            raise ConfigError(f"data.num_classes={datamodule.num_classes} is not allowed: the {split} split has labels "
                              f"up to {int(labelled.max())}; set data.num_classes={int(labelled.max()) + 1}")


def check_image_size(pretrained: PretrainedBackbone, datamodule: ImageDataModule, ckpt: str) -> None:
    size = getattr(pretrained.module, "image_size", None)
    if size is not None and size != datamodule.image_size:
        raise ConfigError(f"data.image_size={datamodule.image_size} is not allowed: the backbone of ckpt={ckpt!r} "
                          f"was built for {size}x{size} images; set data.image_size={size}")


def short_name(config: dict[str, Any]) -> str:
    if "name" in config:
        return str(config["name"])
    if "size" in config:
        return f"vit_{config['size']}"
    return str(config.get("_target_", "?")).rsplit(".", 1)[-1]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load the backbone of ``cfg.ckpt``, run ``cfg.protocol`` on ``cfg.data``; returns the results dict."""
    if OmegaConf.is_missing(cfg, "ckpt") or not cfg.ckpt:
        raise ConfigError("ckpt is required: python -m ssl_lightning.eval ckpt=PATH (a pretraining checkpoint "
                          "or an exported backbone) protocol=knn|linear|finetune")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    check_data(cfg)
    protocol = instantiate(cfg.protocol)
    protocol.show_progress = bool(cfg.get("enable_progress_bar", True))  # bars on rank 0 only
    datamodule: ImageDataModule = instantiate(cfg.data)
    backbone_cfg = OmegaConf.to_container(cfg.backbone, resolve=True) if cfg.get("backbone") else None
    pretrained = load_pretrained(cfg.ckpt, prefix=cfg.prefix, backbone=backbone_cfg,
                                 image_only=f"protocol={protocol.name} evaluates image backbones")
    check_image_size(pretrained, datamodule, cfg.ckpt)

    out = Path(cfg.paths.output_dir)
    fabric = L.Fabric(**cfg.fabric, loggers=TensorBoardLogger(out, name="tensorboard", version="", default_hp_metric=False))
    fabric.launch()
    datamodule.build_splits()  # every rank at once: an ImageFolder's file check is split over the ranks
    check_labels(datamodule, protocol.name)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = fabric.to_device(pretrained.module)
    metrics = protocol.run(backbone, datamodule, fabric, cfg.seed)

    name = protocol.name
    results = {
        "protocol": name,
        "metrics": {f"{name}_top1": metrics["top1"], f"{name}_top5": metrics["top5"]},
        "train_images": metrics.get("train_images"),
        "val_images": metrics.get("val_images"),
        "label_fraction": datamodule.label_fraction,
        "data": type(datamodule).__name__,
        "pretrained": {"method": pretrained.method, "backbone": pretrained.config, **pretrained.source},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    fabric.log_dict({f"eval/{k}": v for k, v in results["metrics"].items()}, step=0)
    fabric.logger.log_hyperparams(results["config"])
    fabric.logger.finalize("success")
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        row = {"protocol": name, "method": pretrained.method or "-", "backbone": short_name(pretrained.config),
               "step": pretrained.source.get("global_step"), "label fraction": datamodule.label_fraction,
               "train images": results["train_images"], "val images": results["val_images"],
               "top1": metrics["top1"], "top5": metrics["top5"]}
        print(f"\n{cfg.ckpt}\n" + format_table([row], list(row)) + f"\n\nresults: {out / 'results.json'}", flush=True)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    launch.install("ssl_lightning.eval")  # fabric.devices=N under Hydra: each child rank runs this very job
    with exit_on_config_error(), launch.hydra_job():
        results = evaluate(cfg)
    return results["metrics"][f"{results['protocol']}_top1"]


if __name__ == "__main__":
    main()
