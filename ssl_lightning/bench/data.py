"""The input pipeline alone (``python -m ssl_lightning.bench data``): augmented views/s of
the per-sample PIL torchvision pipeline (``data.gpu_augment=false``: every view made by PIL in the loader
workers) against the batched path (``data.gpu_augment=true``: crops in the workers, the rest of the view
pipeline on the whole batch on the training device, here the device the benchmark runs on; on a CPU with
loader workers, in the workers, as a CPU training run does it), with the worker count of the data config,
on the ``bench.image`` data and the augmentation of ``bench.data.method``. Then the one-thread CPU time of
each stage, which bounds views/s where the CPU is the device.
"""

from __future__ import annotations

import time

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import default_collate

from ssl_lightning.bench.common import image_overrides, to_device


def _views_per_s(datamodule, device: torch.device, batches: int) -> float:
    loader = iter(datamodule.train_dataloader())
    count, start = 0, None
    for i in range(batches + 1):
        if i == 1:  # the first batch starts the workers: not timed
            start = time.perf_counter()
        views, _ = next(loader)
        views = datamodule.augment_on_device(to_device(views, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 1:
            count += sum(v.shape[0] for v in views)
    return count / (time.perf_counter() - start)


def stage_ms(transform, images: list, repeats: int = 3) -> dict[str, float]:
    """CPU time of each stage on one thread, best of ``repeats``, for one view set of every image: the PIL
    pipeline; the batched path's CPU half (crops and parameters) and its batched half (``DeviceViews``)."""
    from ssl_lightning.transforms.batched import CropViews, DeviceViews

    crop, batched = CropViews(transform), DeviceViews(transform)
    views = default_collate([crop(im) for im in images])  # what the loader hands the batched half

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"pil": best(lambda: [transform(im) for im in images]), "crop": best(lambda: [crop(im) for im in images]),
                "batched": best(lambda: batched(views))}
    finally:
        torch.set_num_threads(threads)


def run(cfg: DictConfig) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dc = cfg.bench.data
    rows = []
    for gpu_augment in (False, True):
        overrides = [f"method={dc.method}", *image_overrides(cfg), f"data.gpu_augment={str(gpu_augment).lower()}"]
        if dc.num_workers is not None:
            overrides.append(f"data.num_workers={dc.num_workers}")
        if cfg.bench.image.data == "synthetic":  # enough made-up images for the warm-up batch and the timed ones
            overrides.append(f"data.num_samples={(dc.batches + 1) * cfg.bench.image.batch_size}")
        c = compose("bench", overrides=overrides)
        c.paths.output_dir = cfg.paths.output_dir
        transform = instantiate(c.augment)
        dm = instantiate(c.data, train_transform=transform)
        dm.setup("fit")
        rate = _views_per_s(dm, device, dc.batches)
        rows.append({"pipeline": "batched (data.gpu_augment=true)" if gpu_augment else "per-sample PIL (torchvision)",
                     "workers": dm.num_workers, "batch": dm.batch_size, "views_s": rate})
    if dm.augments_in_workers():
        where = f"the {dm.num_workers} loader workers: on a CPU run the batched half runs there"
    else:
        where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nInput pipeline, {dc.method}'s augmentation on {c.data._target_.rsplit('.', 1)[-1]} {c.data.image_size} px "
          f"(device side on {where})")
    print(f"{'pipeline':<34} {'workers':>7} {'batch':>6} {'views/s':>10} {'vs. PIL':>8}")
    for r in rows:
        print(f"{r['pipeline']:<34} {r['workers']:>7} {r['batch']:>6} {r['views_s']:>10.1f} {r['views_s'] / rows[0]['views_s']:>8.2f}")
    train = dm.split("train")
    images = [train[i][0] for i in range(min(len(train), dm.batch_size))]
    ms = stage_ms(transform, images)
    views = len(images) * transform.num_views
    print(f"CPU time per {views} views, one thread: PIL {ms['pil']:.1f} ms; batched path {ms['crop'] + ms['batched']:.1f} ms "
          f"= crops and parameters {ms['crop']:.1f} + batched ops {ms['batched']:.1f} (at most {ms['pil'] / (ms['crop'] + ms['batched']):.2f}x "
          "PIL where CPU time is the bound)")
    return rows
