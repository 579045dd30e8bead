"""MoCo's one-device Shuffle-BN: one training step with the BatchNorm groups in one backbone call per view
(:class:`~ssl_lightning.nn.SplitBatchNorm2d`, today's path) against one backbone call per group (the former
path: ``bn_splits`` calls per view), on the same model, batch and queue.

    python -m ssl_lightning.bench moco                          # ResNet-18, batch 64, 32 px, 8 splits
    python -m ssl_lightning.bench moco batch_size=256 bn_splits=8 steps=5

Prints the median step time of each path (forward of queries and keys, loss, backward, SGD step; the
variants interleaved over ``rounds`` so drift on a shared machine hits both), their ratio, and the largest
difference of the two paths' losses on the same weights (the same numbers up to float rounding). On a GPU
the steps are timed after a device synchronisation. Not a timed test.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial

import torch

from ssl_lightning.bench.common import parse_settings, sync


@dataclass
class Settings:
    batch_size: int = 64
    image_size: int = 32
    bn_splits: int = 8
    steps: int = 3  # timed steps per variant and round (median), after one warm-up step each
    rounds: int = 3


def parse(argv: list[str]) -> Settings:
    settings = parse_settings(Settings(), argv, "moco")
    if settings.batch_size % settings.bn_splits:
        raise SystemExit(f"bench moco: batch_size={settings.batch_size} is not a multiple of bn_splits={settings.bn_splits}")
    return settings


def make_moco(s: Settings, device: torch.device):
    from ssl_lightning.backbones.resnet import resnet
    from ssl_lightning.methods import MoCo

    torch.manual_seed(0)
    method = MoCo(resnet("resnet18", cifar_stem=s.image_size <= 64), partial(torch.optim.SGD, lr=0.03, momentum=0.9),
                  queue_size=4096, tau=0.99, shuffle_bn=True, bn_splits=s.bn_splits).to(device)
    method.queue_filled.fill_(method.queue.shape[0])  # a full queue, as after the first epoch
    method.queue.copy_(torch.nn.functional.normalize(torch.randn_like(method.queue), dim=1))
    method.log_lr = lambda: None  # no trainer here: the step's compute is what is timed
    return method


def time_steps(method, batch, one_call: bool, steps: int, device: torch.device) -> tuple[list[float], float]:
    method._split_in_one_call = one_call
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.0)  # weights stay put

    def step() -> torch.Tensor:
        loss = method.training_step(batch, 0)["loss"]
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        return loss.detach()

    loss = step()  # warm-up
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times, float(loss)


def bench(s: Settings) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method = make_moco(s, device).train()
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(s.batch_size, 3, s.image_size, s.image_size, generator=g).to(device) for _ in range(2)]
    batch = (views, torch.zeros(s.batch_size, dtype=torch.long, device=device))
    times = {True: [], False: []}
    losses = {True: [], False: []}
    for _ in range(s.rounds):
        for one_call in (False, True):
            t, loss = time_steps(method, batch, one_call, s.steps, device)
            times[one_call] += t
            losses[one_call].append(loss)
    before, after = statistics.median(times[False]), statistics.median(times[True])
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
            "before_ms": 1000 * before, "after_ms": 1000 * after, "ratio": after / before,
            "loss_diff": max(abs(a - b) for a, b in zip(losses[True], losses[False]))}


def main() -> None:
    settings = parse(sys.argv[1:])
    warnings.filterwarnings("ignore", message=".*self.log.*")  # the step logs; no trainer records it here
    row = bench(settings)
    print(f"MoCo v2 one-device Shuffle-BN step, ResNet-18 ({row['device']}): {asdict(settings)}")
    print(f"{'per-group calls ms':>19} {'one call ms':>12} {'one call / per-group':>21} {'loss difference':>16}")
    print(f"{row['before_ms']:>19.1f} {row['after_ms']:>12.1f} {row['ratio']:>21.3f} {row['loss_diff']:>16.2e}")
