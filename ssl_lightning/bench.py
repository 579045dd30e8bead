"""Training-step throughput: our Lightning loop against a plain PyTorch loop of the same model, loss and
update, on the same pre-made batches, in the same process.

    python -m ssl_lightning.bench                                   # SimCLR and BYOL on the default data
    python -m ssl_lightning.bench data=imagefolder data.train_dir=DIR data.val_dir=DIR data.batch_size=256

Prints images/s of each loop and their ratio (ours / plain). Data loading is excluded from both: the
batches are augmented once, up front.
"""

from __future__ import annotations

import copy
import time

import hydra
import lightning as L
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ssl_lightning.bench_plain import PLAIN_STEPS
from ssl_lightning.config import config_dir


class _Batches(L.LightningDataModule):
    def __init__(self, batches: list, batch_size: int):
        super().__init__()
        self.batches, self.batch_size = batches, batch_size

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None, shuffle=False)


class _Timer(Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            _sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync()
        self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_batches(cfg: DictConfig, count: int) -> tuple[list, int]:
    dm = instantiate(cfg.data, train_transform=instantiate(cfg.augment))
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    if len(batches) < count:  # a small dataset: cycle
        batches = (batches * (count // len(batches) + 1))[:count]
    return batches, dm.batch_size


def time_lightning(method: L.LightningModule, batches: list, batch_size: int, warmup: int, accelerator: str) -> float:
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_steps=len(batches), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[timer], use_distributed_sampler=False,
    )
    trainer.fit(method, datamodule=_Batches(batches, batch_size))
    return timer.end - timer.start


def time_plain(method: L.LightningModule, batches: list, batch_size: int, warmup: int, device: torch.device) -> float:
    step = PLAIN_STEPS[type(method).__name__](method, device, batch_size, total_steps=len(batches))
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync()
            start = time.perf_counter()
        step([v.to(device, non_blocking=True) for v in batch[0]])
    _sync()
    return time.perf_counter() - start


def bench_method(cfg: DictConfig, warmup: int, steps: int) -> dict:
    L.seed_everything(cfg.seed, verbose=False)
    batches, batch_size = make_batches(cfg, warmup + steps)
    method = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    plain_copy = copy.deepcopy(method)  # same initial weights for both loops
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    images = steps * batch_size
    t_plain = time_plain(plain_copy.to(device), batches, batch_size, warmup, device)
    t_ours = time_lightning(method, batches, batch_size, warmup, accelerator)
    return {
        "method": type(method).__name__,
        "batch": batch_size,
        "ours_img_s": images / t_ours,
        "plain_img_s": images / t_plain,
        "ratio": t_plain / t_ours,
    }


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="bench")
def main(cfg: DictConfig) -> None:
    passed = [o for o in HydraConfig.get().overrides.task if not o.startswith(("method=", "bench."))]
    rows = []
    for name in cfg.bench.methods:
        method_cfg = compose("bench", overrides=[*passed, f"method={name}"])
        method_cfg.paths.output_dir = cfg.paths.output_dir
        rows.append(bench_method(method_cfg, cfg.bench.warmup, cfg.bench.steps))
    print(f"\n{'method':<10} {'batch':>6} {'ours img/s':>11} {'plain img/s':>12} {'ours/plain':>11}")
    for r in rows:
        print(f"{r['method']:<10} {r['batch']:>6} {r['ours_img_s']:>11.1f} {r['plain_img_s']:>12.1f} {r['ratio']:>11.3f}")


if __name__ == "__main__":
    main()
