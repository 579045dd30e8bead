"""What every benchmark mode shares: device synchronisation, peak memory, moving batches, image overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import DictConfig


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
