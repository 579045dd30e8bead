"""MAE's step time at mask ratios 0.5, 0.75 and 0.9 against the same ViT encoding every patch, in one run.

    python -m ssl_lightning.bench mae                                   # the MAE defaults (ViT-Tiny/2 on 16 px: 64 patches)
    python -m ssl_lightning.bench mae data.image_size=32 backbone=vit_tiny bench.batch_size=256 trainer.precision=bf16-mixed

A step is MAE's training step on a fixed random batch: encoder on the visible patches, decoder on all
patches, loss, backward and AdamW update (no data loading). Mask ratio 0 is the reference: the same model
encodes all N patches and the loss covers every patch. Ratios are step time / reference step time (MAE,
Table 2: about 1/3 at 0.75 for ViT-L). Ratios are measured interleaved over ``bench.rounds`` rounds and the
median is reported, which keeps drift on a shared machine out of the ratios.
"""

from __future__ import annotations

import statistics
import time

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_lightning.backbones.vit import patchify
from ssl_lightning.bench.common import sync
from ssl_lightning.config import config_dir
from ssl_lightning.losses import mae_loss
from ssl_lightning.optim import param_groups
from ssl_lightning.transforms.masking import mask_to_ids, random_masking


def make_step(model, device: torch.device, precision: str):
    """One MAE training step for a batch and a mask (all False: encode every patch, loss on all)."""
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    p = model.backbone.patch_size

    def step(images: torch.Tensor, mask: torch.Tensor, num_masked: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            ids_keep, ids_restore = mask_to_ids(mask, num_masked)
            latent = model.backbone.forward_tokens(images, ids_keep)  # (B, 1 + N - M, D)
            pred = model.decoder(latent, ids_restore)
            loss = mae_loss(pred, patchify(images, p), mask if num_masked else ~mask, model.norm_pix_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench(cfg: DictConfig) -> list[dict]:
    L.seed_everything(cfg.seed, verbose=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).to(device).train()
    n, batch = model.backbone.num_patches, cfg.bench.batch_size
    images = torch.randn(batch, 3, model.backbone.image_size, model.backbone.image_size, device=device)
    step = make_step(model, device, str(cfg.trainer.precision))
    ratios = [0.0, *cfg.bench.ratios]
    counts = {r: int(round(n * r)) for r in ratios}
    masks = {r: random_masking(batch, n, counts[r], device=device)[2] for r in ratios}
    for r in ratios:  # warm up every shape
        for _ in range(cfg.bench.warmup):
            step(images, masks[r], counts[r])
    times: dict[float, list[float]] = {r: [] for r in ratios}
    for _ in range(cfg.bench.rounds):
        for r in ratios:
            sync(device)
            start = time.perf_counter()
            for _ in range(cfg.bench.steps):
                step(images, masks[r], counts[r])
            sync(device)
            times[r].append((time.perf_counter() - start) / cfg.bench.steps)
    full = statistics.median(times[0.0])
    return [{"mask_ratio": r, "visible": n - counts[r], "patches": n, "batch": batch,
             "ms": 1000 * statistics.median(times[r]), "ratio": statistics.median(times[r]) / full} for r in ratios]


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="bench_mae")
def main(cfg: DictConfig) -> None:
    rows = bench(cfg)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nMAE step time vs. encoding all patches ({device}, precision {cfg.trainer.precision})")
    print(f"{'mask ratio':>10} {'visible/N':>10} {'batch':>6} {'ms/step':>9} {'vs. full':>9}")
    for r in rows:
        print(f"{r['mask_ratio']:>10.2f} {r['visible']:>4}/{r['patches']:<5} {r['batch']:>6} {r['ms']:>9.1f} {r['ratio']:>9.3f}")

