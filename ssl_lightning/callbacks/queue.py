"""Queue update: append the keys of each optimizer step to a ring buffer on the module (MoCo, SwAV)."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch

from ssl_lightning.callbacks.steps import AfterOptimizerStep


@torch.no_grad()
def ring_enqueue_(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor, filled: torch.Tensor | None = None) -> None:
    """Write ``keys`` (n, ...) into the ring buffer ``queue`` (K, ...) from row ``ptr`` on, wrapping around at
    K, and advance ``ptr`` (a 0-dim long tensor) by n modulo K. Works for any n and K (n need not divide K);
    if n > K only the last K keys are kept, as if they had been written one after another.

    ``filled`` (a 0-dim long tensor, optional): the number of rows written so far, advanced by n up to K. A
    queue that starts empty at ``ptr`` 0 fills rows 0, 1, ... first, so its rows ``[0, filled)`` hold keys.

    Everything stays on the device (no host synchronisation): the pointer and the count are tensors.
    """
    size, n = queue.shape[0], keys.shape[0]
    if size == 0 or n == 0:
        return
    skip = max(0, n - size)  # keys overwritten within this same call
    rows = (ptr + skip + torch.arange(n - skip, device=queue.device)) % size  # (min(n, K),)
    queue.index_copy_(0, rows, keys[skip:].to(queue.dtype))
    ptr.add_(n).remainder_(size)
    if filled is not None:
        filled.add_(n).clamp_(max=size)


class QueueUpdate(AfterOptimizerStep):
    """After every optimizer step, hand the keys the training steps returned as ``outputs["enqueue"]`` to
    ``pl_module.enqueue(keys)``, which writes them into its queue (a persistent buffer on the module, so it is
    checkpointed and, holding keys gathered from all ranks, identical on every DDP rank).

    Enqueueing after the step keeps the step's negatives the queue of the previous steps (the paper's order:
    the current keys are never their own negatives). With gradient accumulation the keys of the micro-steps
    are held back and enqueued together, once, after the optimizer step, so the queue moves with the
    optimizer like the momentum encoder does. A step skipped for a non-finite loss (``NonFiniteLoss`` in skip
    mode) enqueues nothing.
    """

    def __init__(self) -> None:
        self._pending: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._pending = []

    def micro_step(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs) -> None:
        keys = outputs.get("enqueue") if isinstance(outputs, Mapping) else None
        if keys is not None:
            self._pending.append(keys.detach())

    def skipped_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = []  # its keys may be non-finite too, and the weights did not move

    def optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending:
            pl_module.enqueue(torch.cat(self._pending))
            self._pending = []
