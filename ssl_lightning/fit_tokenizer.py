"""Fit BEiT's k-means visual tokenizer on the training images and save it to a file.

    python -m ssl_lightning.fit_tokenizer output=tokenizer.pt                       # digits, ViT patch size
    python -m ssl_lightning.fit_tokenizer data=imagefolder data.train_dir=DIR data.val_dir=DIR \\
        backbone=vit_tiny method.vocab_size=1024 output=cifar_p4.pt
    python -m ssl_lightning.train method=beit data=imagefolder ... backbone=vit_tiny method.tokenizer_path=cifar_p4.pt

Takes the overrides of the BEiT run it is for (data, backbone, method.vocab_size, method.tokenizer_fit_*),
so the file matches that run's image size, patch size and vocabulary. Patches come from one augmented
view (BEiT's pipeline) of up to ``method.tokenizer_fit_images`` training images; fitting runs on a GPU
when there is one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_lightning.config import check, config_dir, exit_on_config_error
from ssl_lightning.data import TransformedDataset
from ssl_lightning.tokenizers import fit_kmeans_tokenizer, save_tokenizer

log = logging.getLogger(__name__)


def fit(cfg: DictConfig) -> Path:
    """Fit and save; returns the file written."""
    L.seed_everything(cfg.seed, verbose=False)
    patch_size = cfg.backbone.get("patch_size")
    check(patch_size is not None, "backbone", cfg.backbone.get("_target_"), "a ViT backbone config (its patch size sets the tokens)")
    transform = instantiate(cfg.augment)
    datamodule = instantiate(cfg.data, train_transform=transform)
    method = cfg.method
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dataset = TransformedDataset(datamodule.split("train"), transform)
    tokenizer, stats = fit_kmeans_tokenizer(
        dataset, datamodule.mean, datamodule.std, datamodule.image_size, patch_size, method.vocab_size,
        max_images=method.tokenizer_fit_images, max_patches=method.tokenizer_fit_patches, iters=method.tokenizer_fit_iters,
        seed=cfg.seed, num_workers=datamodule.num_workers, device=device,
    )
    path = save_tokenizer(tokenizer, cfg.output or Path(cfg.paths.output_dir) / "tokenizer.pt", fit=stats)
    log.info("%d codes fitted on %d patches of %d images: codebook usage %.1f%%, perplexity %.0f, inertia %.4g",
             method.vocab_size, stats["patches"], stats["images"], 100 * stats["usage"], stats["perplexity"], stats["inertia"])
    log.info("saved %s; use it with: python -m ssl_lightning.train method=beit [same overrides] method.tokenizer_path=%s",
             path, path.resolve())
    return path


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="fit_tokenizer")
def main(cfg: DictConfig) -> None:
    with exit_on_config_error():
        fit(cfg)


if __name__ == "__main__":
    main()
