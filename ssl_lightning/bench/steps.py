"""Training-step throughput: our Lightning loop against a plain PyTorch loop of the same model, loss and
update, on the same pre-made batches, in the same process; the MAE visible-patch check; the input pipeline.

    python -m ssl_lightning.bench                                   # every method, ResNet-18, batch 128, 32 px
    python -m ssl_lightning.bench bench.methods=[simclr,byol] bench.steps=20 trainer.precision=bf16-mixed
    python -m ssl_lightning.bench data                              # the input pipeline alone (same as mode=data)
    python -m ssl_lightning.bench data=imagefolder data.train_dir=DIR data.val_dir=DIR data.batch_size=256

Step mode prints, per method, images/s (tokens/s for text methods) of each loop (median step time after ``bench.warmup``
steps), their ratio (ours / plain, the same batches), and the peak memory of each loop: CUDA
``max_memory_allocated`` on a GPU; on CPU the peak resident set size of the process (Linux ``VmHWM``,
reset before each loop through ``/proc/self/clear_refs``), which includes the interpreter and the batches.
Data loading is excluded from both loops: the batches are made once, up front. Then MAE's step time at
mask ratio ``method.mask_ratio`` against the same ViT encoding every patch (:mod:`ssl_lightning.bench.mae`).

Data mode (:mod:`ssl_lightning.bench.data`) measures augmented views/s of our pipeline against a per-sample
PIL torchvision pipeline doing the same augmentations.
"""

from __future__ import annotations

import copy
import statistics
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

from ssl_lightning.bench.common import image_overrides, peak_memory_mib, reset_peak_memory, sync, to_device
from ssl_lightning.bench.plain import plain_step
from ssl_lightning.config import config_dir
from ssl_lightning.train import check_compatible, fill_from_data


def device_augment(datamodule):
    """The device half of ``data.gpu_augment`` as training runs it after the batch transfer (the datamodule's
    ``augment_on_device``; batches of data without it unchanged). Both loops apply it inside their timed step."""
    augment = getattr(datamodule, "augment_on_device", None)

    def apply(batch):
        if augment is None:
            return batch
        views, labels = batch
        return augment(views), labels

    return apply


class _Batches(L.LightningDataModule):
    """Pre-made batches, with the attributes methods read from their datamodule (batch size, normalisation,
    tokenizer) and its device-side augmentation."""

    def __init__(self, batches: list, source):
        super().__init__()
        self.batches, self.batch_size = batches, source.batch_size
        self.augment = device_augment(source)
        for name in ("mean", "std", "tokenizer", "block_size"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.augment(batch)


class _Timer(Callback):
    """Per-step wall times from one batch start to the next (the last step: to the end of its batch-end
    hooks, this callback's hook running last), so every hook and the EMA / queue updates are inside."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.marks = warmup, device, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx >= self.warmup:
            sync(self.device)
            self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        sync(self.device)
        self.marks.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


# -- one method -----------------------------------------------------------------------------------------


def build(cfg: DictConfig):
    """Data, method and batches as train.py builds them (the method's collator for text data)."""
    datamodule = instantiate(cfg.data, train_transform=instantiate(cfg.augment)) if cfg.get("augment") else instantiate(cfg.data)
    fill_from_data(cfg, datamodule)
    method = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    check_compatible(method, datamodule, getattr(datamodule, "train_transform", None))
    if hasattr(datamodule, "collate_fn"):
        datamodule.collate_fn = method.collator
    if hasattr(method, "attach") and hasattr(datamodule, "train_transform"):
        method.attach(datamodule.train_transform)  # jigsaw: the permutation set
    datamodule.setup("fit")
    if hasattr(method, "fit_tokenizer"):  # BEiT: fit the k-means tokenizer once, before the copies
        method.fit_tokenizer(datamodule)
    return datamodule, method


def make_batches(datamodule, count: int) -> list:
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == count:
            break
    if len(batches) < count:  # a small dataset: cycle
        batches = (batches * (count // len(batches) + 1))[:count]
    return batches


def items_per_batch(batch) -> tuple[int, str]:
    """(images, "img") for image batches; (tokens, "tok") for text batches ``(inputs (B, T), labels)``."""
    inputs = batch[0]
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 2 and not inputs.is_floating_point():
        return inputs.numel(), "tok"
    if isinstance(inputs, dict):
        return inputs["image"].shape[0], "img"
    first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    if isinstance(first, (list, tuple)):  # data.gpu_augment: (uint8 crops, params) per view
        first = first[0]
    return first.shape[0], "img"


def time_lightning(method, batches, datamodule, warmup: int, cfg: DictConfig, device: torch.device) -> list[float]:
    timer = _Timer(warmup, device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_steps=len(batches),
        precision=cfg.trainer.precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer],
        use_distributed_sampler=False,
    )
    trainer.fit(method, datamodule=_Batches(batches, datamodule))
    return timer.times


def time_plain(method, batches, batch_size: int, warmup: int, precision: str, device: torch.device,
               augment=lambda batch: batch) -> list[float]:
    if hasattr(method, "configure_model"):
        method.configure_model()  # the fast paths (channels_last, compile) Lightning applies in fit
    step = plain_step(method, device, batch_size, len(batches), precision)
    marks = []
    for i, batch in enumerate(batches):
        if i >= warmup:
            sync(device)
            marks.append(time.perf_counter())
        step(augment(to_device(batch, device)))
    sync(device)
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def bench_method(cfg: DictConfig, warmup: int, steps: int, rounds: int = 1) -> dict:
    L.seed_everything(cfg.seed, verbose=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    datamodule, method = build(cfg)
    batches = make_batches(datamodule, warmup + steps)
    plain_copy = copy.deepcopy(method)  # same initial weights for both loops
    items, unit = items_per_batch(batches[0])
    precision = str(cfg.trainer.precision)
    t_plain, t_ours, mem_plain, mem_ours = [], [], 0.0, 0.0
    for r in range(rounds):  # interleaved, so drift on a shared machine hits both loops alike ...
        for loop in ("plain", "ours") if r % 2 == 0 else ("ours", "plain"):  # ... and each goes first in turn
            reset_peak_memory(device)
            if loop == "plain":
                t_plain += time_plain(plain_copy.to(device), batches, datamodule.batch_size, warmup, precision,
                                      device, device_augment(datamodule))
                mem_plain = max(mem_plain, peak_memory_mib(device))
            else:
                t_ours += time_lightning(method, batches, datamodule, warmup, cfg, device)
                mem_ours = max(mem_ours, peak_memory_mib(device))
    t_ours, t_plain = statistics.median(t_ours), statistics.median(t_plain)  # per step; robust to a shared machine
    return {"method": type(method).__name__, "backbone": type(method.backbone).__name__, "batch": datamodule.batch_size,
            "unit": unit, "ours": items / t_ours, "plain": items / t_plain, "ratio": t_plain / t_ours,
            "mem_ours": mem_ours, "mem_plain": mem_plain}


def print_steps(rows: list[dict], precision: str, device: torch.device) -> None:
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mem = "CUDA max allocated" if device.type == "cuda" else "peak RSS"
    print(f"\nTraining step, ours (Lightning) vs. plain PyTorch ({where}, precision {precision}; memory: {mem}, MiB)")
    print(f"{'method':<12} {'backbone':<18} {'batch':>5} {'ours/s':>10} {'plain/s':>10} {'unit':>4} {'ours/plain':>10} "
          f"{'mem ours':>9} {'mem plain':>9}")
    for r in rows:
        print(f"{r['method']:<12} {r['backbone']:<18} {r['batch']:>5} {r['ours']:>10.1f} {r['plain']:>10.1f} {r['unit']:>4} "
              f"{r['ratio']:>10.3f} {r['mem_ours']:>9.0f} {r['mem_plain']:>9.0f}")


def mae_check(passed: list[str], cfg: DictConfig) -> list[dict]:
    """MAE at mask ratio ``bench.mae.mask_ratio`` against the same ViT encoding every patch."""
    from ssl_lightning.bench.mae import bench as bench_mae

    mae = cfg.bench.mae
    overrides = [o for o in passed if not o.startswith(("backbone=", "backbone.", "method.", "augment"))]
    mae_cfg = compose("bench_mae", overrides=[
        *image_overrides(cfg), f"backbone={mae.backbone}", *overrides, f"bench.ratios=[{mae.mask_ratio}]", f"bench.steps={mae.steps}",
        f"bench.rounds={mae.rounds}", f"bench.warmup={mae.warmup}"])
    mae_cfg.paths.output_dir = cfg.paths.output_dir
    rows = bench_mae(mae_cfg)
    print(f"\nMAE step time vs. the same ViT encoding every patch ({mae_cfg.backbone.size}/{mae_cfg.backbone.patch_size}, "
          f"{mae_cfg.data.image_size} px, batch {rows[0]['batch']}, precision {mae_cfg.trainer.precision}; "
          f"target <= 0.45 at 0.75)")
    for r in rows:
        print(f"  mask ratio {r['mask_ratio']:.2f}: {r['visible']:>4}/{r['patches']} patches encoded, {r['ms']:8.1f} ms/step, "
              f"{r['ratio']:.3f} x full")
    return rows


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="bench")
def main(cfg: DictConfig) -> None:
    passed = [o for o in HydraConfig.get().overrides.task if not o.startswith(("method=", "bench.", "mode="))]
    if cfg.mode == "data":
        from ssl_lightning.bench.data import run as run_data

        run_data(cfg)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    image = image_overrides(cfg)
    jobs = [(m, image) for m in cfg.bench.methods] + [(m, []) for m in cfg.bench.text_methods]
    for name, base in jobs:
        extra = [*base, *cfg.bench.method_overrides.get(name, [])]
        method_cfg = compose("bench", overrides=[f"method={name}", *extra, *passed])
        method_cfg.paths.output_dir = cfg.paths.output_dir
        rows.append(bench_method(method_cfg, cfg.bench.warmup, cfg.bench.steps, cfg.bench.rounds))
        print_steps(rows[-1:], str(cfg.trainer.precision), device)
    print_steps(rows, str(cfg.trainer.precision), device)
    if cfg.bench.mae.enabled:
        mae_check(passed, cfg)

