"""Synchronised BatchNorm that runs on any backend (gloo on CPU, NCCL on GPUs).

SimCLR (Chen et al., 2020, Sec. B.9 "Global BN"), BYOL, SwAV, Barlow Twins and VICReg aggregate BatchNorm
mean and variance over all devices, so that the statistics are those of the global batch (and, for SimCLR,
so that a device cannot "cheat" the contrastive task through local statistics). ``torch.nn.SyncBatchNorm``
only runs on CUDA tensors; this one builds the global statistics from the differentiable all-gather of
:mod:`ssl_lightning.distributed`, so its backward is exact on every backend and is what plain BatchNorm
over the concatenated global batch would give.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_lightning.distributed import gather, world_size


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks: input (B, C), (B, C, L) or (B, C, H, W).

    In training, each rank computes its count n_r, mean m_r and sum of squared deviations M2_r per channel
    (in fp32, or fp64 for fp64 inputs); these are all-gathered with gradients and combined with the
    parallel-variance formula (Chan et al., 1979): N = sum n_r, m = sum n_r m_r / N,
    M2 = sum (M2_r + n_r (m_r - m)^2). The input is normalised with m and the biased variance M2 / N; the
    running statistics are updated as BatchNorm does (momentum, unbiased variance M2 / (N - 1)). In
    evaluation, or without a process group of more than one rank, it is plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects an input of at least 2 dimensions (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or world_size() == 1:
            return super().forward(x)
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)

        dtype = torch.promote_types(x.dtype, torch.float32)
        dims = [0, *range(2, x.dim())]  # every dimension but the channel one
        xs = x.to(dtype)
        count = x.numel() // x.shape[1]
        n = torch.full((1,), count, dtype=dtype, device=x.device)
        mean = xs.mean(dim=dims) if count else torch.zeros(x.shape[1], dtype=dtype, device=x.device)  # (C,)
        m2 = ((xs - _expand(mean, x.dim())) ** 2).sum(dim=dims)  # (C,)
        stats = gather(torch.cat([n, mean, m2]).unsqueeze(0))  # (W, 1 + 2C), with gradients
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + x.shape[1]], stats[:, 1 + x.shape[1] :]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total  # (C,)
        g_m2 = (m2s + counts * (means - g_mean) ** 2).sum(0)  # (C,)
        var = g_m2 / total  # biased, for normalisation

        if self.training and self.track_running_stats:
            with torch.no_grad():
                unbiased = g_m2 / (total - 1).clamp(min=1)
                self.running_mean.lerp_(g_mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)

        y = (xs - _expand(g_mean, x.dim())) * _expand(torch.rsqrt(var + self.eps), x.dim())
        if self.affine:
            y = y * _expand(self.weight.to(dtype), x.dim()) + _expand(self.bias.to(dtype), x.dim())
        return y.to(x.dtype)


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) for broadcasting against an input of ``ndim`` dimensions."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module``'s tree by :class:`SyncBatchNorm`, in place, keeping
    the same parameter and buffer objects (an optimizer or an EMA callback holding them still holds them)
    and the train/eval mode; returns ``module`` (or the replacement if ``module`` itself is a BatchNorm).
    Idempotent: a :class:`SyncBatchNorm` is left as it is."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module
