"""Collapse signal of joint-embedding methods: the spread and the effective rank of the embeddings."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from ssl_lightning.config import check
from ssl_lightning.distributed import gather_uneven, world_size


@torch.no_grad()
def normalized_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension standard deviation of the L2-normalised rows of (N, D) ``z``.

    0 when every embedding points the same way (complete collapse); about ``1/sqrt(D)`` when the normalised
    embeddings spread evenly over the sphere (SimSiam, Chen & He, 2021, Sec. 4.1 and Fig. 2).
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


@torch.no_grad()
def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values of (N, D) ``z``, largest first, as square roots of the eigenvalues of the smaller Gram
    matrix (``z z^T`` or ``z^T z``), in fp64 so that the small singular values are resolved too (to about
    1e-8 of the largest): many times faster than an SVD of a wide matrix."""
    z = z.double()
    gram = z @ z.T if z.shape[0] <= z.shape[1] else z.T @ z  # (min(N, D), min(N, D))
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(0)


@torch.no_grad()
def rankme(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe (Garrido et al., 2023, Eq. 1): ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps``
    and ``sigma`` the singular values of the (N, D) embedding matrix: a smooth count of the dimensions the
    embeddings use, between 1 (rank-one collapse) and min(N, D)."""
    s = singular_values(z)
    p = s / s.sum().clamp(min=torch.finfo(s.dtype).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum()).float()


class CollapseMonitor(Callback):
    """Logs once per training epoch ``train/z_std`` (:func:`normalized_std`) and ``train/rank`` (:func:`rankme`)
    of the embeddings ``outputs["z"]`` that every joint-embedding method's ``training_step`` returns (first
    view, detached), so a collapsing run shows in TensorBoard within an epoch: ``train/z_std`` falls towards 0
    and ``train/rank`` towards 1.

    The most recent ``num_samples`` embeddings (over all devices) are kept in a fixed buffer on the device; a
    step only copies into it (no host-device synchronisation). At the end of the epoch the buffers are
    gathered from all ranks and the two numbers computed once. ``train/rank`` can be at most
    ``min(num_samples, D)``: to measure the rank of wide embeddings (e.g. Barlow Twins' 8192), keep more
    samples than dimensions (RankMe uses 25,600). Steps whose outputs carry no ``"z"`` are skipped.

    Args:
        num_samples: embeddings kept, in total over all devices, >= 2.
        eps: RankMe's epsilon (1e-7 in the paper, for fp32).
    """

    def __init__(self, num_samples: int = 2048, eps: float = 1e-7):
        check(isinstance(num_samples, int) and num_samples >= 2, "callbacks.collapse.num_samples", num_samples,
              "an integer >= 2")
        check(eps >= 0, "callbacks.collapse.eps", eps, "a float >= 0")
        self.num_samples, self.eps = num_samples, eps
        self._buffer: torch.Tensor | None = None  # (capacity, D) on the module's device
        self._next = self._count = 0  # host-side ring position and fill; known without a device sync

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._next = self._count = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        z = outputs.get("z") if isinstance(outputs, dict) else None
        if z is None:
            return
        z = z.detach().flatten(1)  # (B, D)
        capacity = math.ceil(self.num_samples / world_size())
        if self._buffer is None or self._buffer.shape[1] != z.shape[1] or self._buffer.device != z.device:
            self._buffer = torch.empty(capacity, z.shape[1], device=z.device, dtype=torch.float32)
            self._next = self._count = 0
        z = z[-capacity:]
        n = z.shape[0]
        first = min(n, capacity - self._next)  # rows before the ring wraps around
        self._buffer[self._next : self._next + first] = z[:first]
        self._buffer[: n - first] = z[first:]
        self._next = (self._next + n) % capacity
        self._count = min(self._count + n, capacity)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._buffer is None:  # no step returned "z" (on any rank: all ranks run the same steps)
            return
        z = gather_uneven(self._buffer[: self._count])  # (N, D), the same on every rank
        if z.shape[0] < 2:
            return
        pl_module.log("train/z_std", normalized_std(z))
        pl_module.log("train/rank", rankme(z, self.eps))
