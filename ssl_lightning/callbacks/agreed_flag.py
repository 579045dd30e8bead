"""A yes/no that every DDP rank learns at the same step, without a host-device synchronisation in the step."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ssl_lightning.distributed import world_size


class AgreedFlag:
    """Each rank posts its own flag; the flags are combined by an all-reduce (MAX) that every rank issues at
    the same point of the same step, so the collectives stay in the same order on every rank. On CUDA the
    reduced flag is copied to pinned host memory asynchronously and read at the next :meth:`take` (a step
    later, by when the copy has long finished), so neither the post nor the read stalls the step; on the
    CPU the value is there at once.

    A rank that sees a fault alone (a NaN loss on one rank, a signal delivered to one process) therefore
    makes every rank act on it at the same step: none blocks in a collective the others never reach.
    """

    def __init__(self):
        self._pending: tuple[torch.Tensor, object, object] | None = None  # (host flag, CUDA event, info)

    def post(self, local: torch.Tensor, info: object = None) -> None:
        """Combine this rank's ``local`` (a bool or integer tensor, any shape: "any element set") with the
        other ranks'. Replaces an unread earlier post."""
        flag = local.reshape(-1).any().to(torch.int32).reshape(1)  # NCCL reduces no bools
        if world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        event = None
        if flag.is_cuda:
            host = torch.empty(1, dtype=torch.int32, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            flag = host
        self._pending = (flag, event, info)

    def take(self) -> tuple[bool, object] | None:
        """(any rank set it, the ``info`` given to :meth:`post`) of the last post, or None if nothing is posted."""
        if self._pending is None:
            return None
        flag, event, info = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()  # posted a step ago: long finished
        return bool(flag), info
