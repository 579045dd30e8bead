"""The few collective operations methods need, usable with or without an initialised process group.

Methods gather *before* calling their pure losses (losses never touch torch.distributed).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice.

    Every method makes the global loss the mean of the ranks' losses, L = (1/W) sum_r loss_r: either each
    rank's loss is the mean over its own anchors (SimCLR, MoCo, SwAV, BYOL), or every rank computes the same
    global loss from gathered tensors (Barlow Twins, VICReg; then loss_r = L). Rank s's slice x_s enters
    every loss_r through the gather, so d(sum_r loss_r)/dx_s = sum_r dloss_r/dX[s]: an all_reduce(SUM) of
    the gathered gradient, sliced. Together with the direct path (x_s in loss_s) each rank thus holds
    W * dL/dx_s, and DDP's *mean* of the parameter gradients over ranks gives exactly dL/dtheta, the
    single-process gradient on the global batch (tests/test_ddp.py checks this for every method).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # autograd may share the incoming tensor
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0, in rank order, with gradients: (W*B, ...)."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without autograd (keys, labels, features)."""
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


@torch.no_grad()
def gather_uneven(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather_no_grad` for tensors whose first dimension differs between ranks."""
    if world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = gather_no_grad(n).tolist()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    full = gather_no_grad(padded)
    return torch.cat([full[i * max(sizes) : i * max(sizes) + s] for i, s in enumerate(sizes)])


@torch.no_grad()
def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place copy of rank ``src``'s ``t`` to every rank (no-op without a process group)."""
    if world_size() > 1:
        dist.broadcast(t, src=src)
    return t


@torch.no_grad()
def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks (no-op without a process group)."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world_size())
    return t
