"""Barlow Twins and VICReg under DDP: statistics over the global batch, with the exact gradient.

Two real processes (gloo) each hold half of a batch. Each gathers both views with ``gather`` (gradients
flow back to the owner) and computes the loss of the whole batch; DDP then averages parameter gradients
over ranks. The result must equal one process computing the loss of the whole batch, in value and in
gradient. (The official Barlow Twins code all_reduces the correlation matrix outside autograd, which drops
the other ranks' contributions to each rank's gradient.)
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_lightning.distributed import gather
from ssl_lightning.losses import barlow_twins_loss, vicreg_loss

WORLD, N, D = 2, 6, 5


def losses(z1: torch.Tensor, z2: torch.Tensor) -> list[torch.Tensor]:
    return [barlow_twins_loss(z1, z2, 0.1), vicreg_loss(z1, z2)[0]]


def full_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * N, D, generator=g, dtype=torch.float64), torch.randn(WORLD * N, D, generator=g, dtype=torch.float64)


def worker(rank: int, init_file: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    z1_all, z2_all = full_batch()
    results = []
    for k in range(2):
        z1 = z1_all[rank * N : (rank + 1) * N].clone().requires_grad_(True)
        z2 = z2_all[rank * N : (rank + 1) * N].clone().requires_grad_(True)
        loss = losses(gather(z1), gather(z2))[k]
        loss.backward()
        # DDP averages parameter gradients over ranks; the local slice's gradient is averaged the same way
        results.append((loss.detach(), z1.grad / WORLD, z2.grad / WORLD))
    out[rank] = results
    dist.destroy_process_group()


def test_gathered_loss_and_gradient_equal_the_single_process_global_batch(monkeypatch):
    with tempfile.TemporaryDirectory() as tmp:
        out = mp.Manager().dict()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned workers only; restored after the test
        mp.spawn(worker, args=(os.path.join(tmp, "init"), out), nprocs=WORLD, join=True)
    z1, z2 = full_batch()
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    for k, loss in enumerate(losses(z1, z2)):
        g1, g2 = torch.autograd.grad(loss, [z1, z2])
        for rank in range(WORLD):
            value, d1, d2 = out[rank][k]
            torch.testing.assert_close(value, loss.detach())
            torch.testing.assert_close(d1, g1[rank * N : (rank + 1) * N])
            torch.testing.assert_close(d2, g2[rank * N : (rank + 1) * N])
