"""SyncBatchNorm's cost on CPU: one ResNet-18 training step with our SyncBatchNorm (2 gloo ranks, statistics
over both) against the same step with ``nn.BatchNorm2d`` (no synchronisation), on the same ranks and batch.

    python -m ssl_lightning.bench syncbn                       # batch 64 per rank, 32 px, CIFAR stem
    python -m ssl_lightning.bench syncbn batch_size=128 image_size=64 steps=5

Prints, per rank, the peak memory of one step (the rise of the process's resident set size above what it held
before the step: Linux ``VmHWM`` after a reset through ``/proc/self/clear_refs``, minus ``VmRSS`` before; large
allocations are mmapped, see :func:`~ssl_lightning.bench.common.spawn_gloo`), the
bytes autograd keeps for backward (counted with ``saved_tensors_hooks``, storages counted once), and the median
step time; then the SyncBN / BatchNorm ratios (target for the peak memory: <= 1.5). Not a timed test.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ssl_lightning.bench.common import parse_settings, peak_memory_mib, reset_peak_memory, spawn_gloo


@dataclass
class Settings:
    batch_size: int = 64  # per rank
    image_size: int = 32
    steps: int = 3  # timed steps per variant (median), after one warm-up step
    world: int = 2


def parse(argv: list[str]) -> Settings:
    """``key=value`` arguments over the defaults of :class:`Settings`."""
    return parse_settings(Settings(), argv, "syncbn")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the activations autograd saves for backward in ``model(x)`` (each storage once; parameters,
    which exist anyway, left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).square().mean()
    return sum(seen.values())


def measure(model: torch.nn.Module, x: torch.Tensor, steps: int) -> dict[str, float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: the step's own memory is measured
        loss.backward()
        optimizer.step()

    step()  # warm-up: gradient buffers, lazy initialisation
    times, peaks = [], []
    for _ in range(steps):
        before = rss_mib()
        reset_peak_memory(x.device)
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        peaks.append(peak_memory_mib(x.device) - before)
    return {"peak_mib": max(peaks), "saved_mib": saved_bytes(model, x) / 2**20, "ms": 1000 * statistics.median(times)}


def _rank(rank: int, settings: Settings) -> dict:
    from ssl_lightning.backbones.resnet import resnet
    from ssl_lightning.nn import convert_sync_batchnorm

    g = torch.Generator().manual_seed(rank)
    x = torch.randn(settings.batch_size, 3, settings.image_size, settings.image_size, generator=g)
    rows = {}
    for name in ("batchnorm", "syncbn", "batchnorm", "syncbn"):  # interleaved: drift hits both
        torch.manual_seed(0)
        model = resnet("resnet18", cifar_stem=settings.image_size <= 64)
        if name == "syncbn":
            convert_sync_batchnorm(model, use_torch=False)
        row = measure(model.train(), x, settings.steps)
        rows[name] = row if name not in rows else {k: min(v, rows[name][k]) for k, v in row.items()}
    return rows


def bench(settings: Settings) -> list[dict]:
    rows = []
    for r, res in enumerate(spawn_gloo(_rank, settings.world, settings)):
        bn, sync = res["batchnorm"], res["syncbn"]
        rows.append({"rank": r, **{f"bn_{k}": v for k, v in bn.items()}, **{f"sync_{k}": v for k, v in sync.items()},
                     "peak_ratio": sync["peak_mib"] / bn["peak_mib"], "saved_ratio": sync["saved_mib"] / bn["saved_mib"],
                     "time_ratio": sync["ms"] / bn["ms"]})
    return rows


def main() -> None:
    settings = parse(sys.argv[1:])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"ResNet-18, {settings.world} gloo ranks x batch {settings.batch_size}, {settings.image_size} px, CPU: "
          f"{asdict(settings)}")
    print(f"{'rank':>4} {'BN peak MiB':>12} {'SyncBN peak MiB':>16} {'peak ratio':>10} {'BN saved MiB':>13} "
          f"{'SyncBN saved MiB':>17} {'saved ratio':>11} {'BN ms':>8} {'SyncBN ms':>10} {'time ratio':>10}")
    for row in bench(settings):
        print(f"{row['rank']:>4} {row['bn_peak_mib']:>12.1f} {row['sync_peak_mib']:>16.1f} {row['peak_ratio']:>10.2f} "
              f"{row['bn_saved_mib']:>13.1f} {row['sync_saved_mib']:>17.1f} {row['saved_ratio']:>11.2f} "
              f"{row['bn_ms']:>8.1f} {row['sync_ms']:>10.1f} {row['time_ratio']:>10.2f}")
    print("target: peak ratio <= 1.5")
