"""What every benchmark mode shares: device synchronisation, peak memory, moving batches, image overrides,
``key=value`` settings."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

import torch
from omegaconf import DictConfig


S = TypeVar("S")


def parse_settings(settings: S, argv: list[str], mode: str) -> S:
    """``key=value`` arguments (integers) over the defaults of the dataclass instance ``settings``; anything
    else exits with a message naming the argument and what is allowed."""
    known = {f.name for f in fields(settings)}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key not in known or not value.isdigit():
            raise SystemExit(f"bench {mode}: {arg!r} is not allowed: key=value with key in {sorted(known)}, value an integer")
        setattr(settings, key, int(value))
    return settings


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- peak memory ---------------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float:
    """CUDA max_memory_allocated, or on CPU the process's peak RSS since the last reset (Linux VmHWM;
    elsewhere ``ru_maxrss``, the peak of the whole run)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024)


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def image_overrides(cfg: DictConfig) -> list[str]:
    img = cfg.bench.image
    extra = ["data.num_samples=" + str(5 * img.batch_size)] if img.data == "synthetic" else []
    return [f"data={img.data}", f"data.image_size={img.image_size}", f"data.batch_size={img.batch_size}", *extra]


# -- gloo ranks on CPU ---------------------------------------------------------------------------------


def _gloo_rank(rank: int, world: int, init: str, out: str, fn, args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.save(fn(rank, *args), Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def spawn_gloo(fn, world: int, *args) -> list:
    """``fn(rank, *args)`` on ``world`` spawned CPU processes in one gloo group; their results in rank order.

    Large allocations are made with mmap in the children (``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave
    the resident set at once and its peak (``VmHWM``) measures the tensors' peak rather than the heap's."""
    import os
    import tempfile

    import torch.multiprocessing as mp

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
    with tempfile.TemporaryDirectory() as out:
        init = f"file://{out}/store"
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_gloo_rank, args=(r, world, init, out, fn, args)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"{getattr(fn, '__name__', fn)}: a rank failed")
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]
