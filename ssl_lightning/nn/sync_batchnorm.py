"""Synchronised BatchNorm that runs on any backend: torch's fused kernels on CUDA, a lean autograd Function on
CPU (gloo).

SimCLR (Chen et al., 2020, Sec. B.9 "Global BN"), BYOL, SwAV, Barlow Twins and VICReg aggregate BatchNorm
mean and variance over all devices, so that the statistics are those of the global batch (and, for SimCLR,
so that a device cannot "cheat" the contrastive task through local statistics).

- On CUDA, :func:`convert_sync_batchnorm` swaps in ``torch.nn.SyncBatchNorm`` (fused CUDA kernels, NCCL).
- ``torch.nn.SyncBatchNorm`` runs on CUDA tensors only, so everywhere else the layers become
  :class:`SyncBatchNorm`: its forward and backward are one autograd Function that keeps, for backward, only
  what torch's own kernels keep (the input, the per-channel global mean, inverse standard deviation and the
  weight); statistics and their reduction are in fp32 (fp64 for fp64 inputs), the output is in the input's
  dtype. An earlier version built the normalisation from about six differentiable element-wise ops on an fp32
  copy of the input and kept about 6x the input's bytes for backward (measured with
  ``python -m ssl_lightning.bench syncbn``; see docs/scale-memory.md).

Both conversions keep the parameter and buffer objects, so optimizer parameter groups, LARS exclusions and EMA
(student, teacher) pairs hold across the swap.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_lightning.distributed import world_size


class _GlobalBatchNorm(torch.autograd.Function):
    """BatchNorm training forward/backward with statistics over every rank's batch.

    Forward: each rank's count n_r, mean m_r and sum of squared deviations M2_r per channel are all-gathered
    (one collective of (1 + 2C) numbers) and combined with the parallel-variance formula (Chan et al., 1979):
    N = sum n_r, m = sum n_r m_r / N, M2 = sum (M2_r + n_r (m_r - m)^2), var = M2 / N (biased, for
    normalisation). y = x * (w / sqrt(var + eps)) + (b - m w / sqrt(var + eps)).

    Backward (BatchNorm's, with global sums): with g the upstream gradient and xhat = (x - m) invstd,
    sum_g = sum g and sum_gx = sum g (x - m) are all-reduced (one collective of 2C numbers); then
    dx = w invstd (g - sum_g / N - xhat invstd sum_gx / N), dw = invstd * local sum_gx, db = local sum_g.
    dx is d(sum over ranks of the losses)/dx, which is what the differentiable gather of
    :mod:`ssl_lightning.distributed` gives and what DDP's gradient mean turns into the single-process gradient
    of the global batch (``tests/test_ddp.py``); dw and db are local sums that DDP averages, as for
    ``torch.nn.SyncBatchNorm``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps: float, momentum: float | None, update: bool):
        dtype = torch.promote_types(x.dtype, torch.float32)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]  # every dimension but the channel one
        count = x.numel() // c
        if count:
            var, mean = torch.var_mean(x.to(dtype), dim=dims, correction=0)  # (C,), (C,); the cast is transient
            m2 = var * count
        else:
            mean = m2 = torch.zeros(c, dtype=dtype, device=x.device)
        local = torch.cat([torch.full((1,), count, dtype=dtype, device=x.device), mean, m2])  # (1 + 2C,)
        stats = torch.empty(world_size() * local.numel(), dtype=dtype, device=x.device)
        dist.all_gather_into_tensor(stats, local)
        stats = stats.view(world_size(), -1)  # (W, 1 + 2C)
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + c], stats[:, 1 + c :]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total  # (C,)
        g_m2 = (m2s + counts * (means - g_mean) ** 2).sum(0)  # (C,)
        invstd = torch.rsqrt(g_m2 / total + eps)  # (C,)
        if update:  # running statistics as BatchNorm: momentum, unbiased variance
            unbiased = g_m2 / (total - 1).clamp(min=1)
            running_mean.lerp_(g_mean.to(running_mean.dtype), momentum)
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
        w = weight.to(dtype) if weight is not None else torch.ones(c, dtype=dtype, device=x.device)
        scale = w * invstd
        shift = (bias.to(dtype) if bias is not None else 0.0) - g_mean * scale
        y = torch.addcmul(_expand(shift, x.dim()), x, _expand(scale, x.dim())).to(x.dtype)
        ctx.save_for_backward(x, g_mean, invstd, weight)
        ctx.total = total  # a 0-dim tensor, kept on the device (no host sync)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, mean, invstd, weight = ctx.saved_tensors
        dtype, nd = mean.dtype, x.dim()
        dims = [0, *range(2, nd)]
        g = grad_y.to(dtype)
        xmu = x.to(dtype) - _expand(mean, nd)
        sum_g, sum_gx = g.sum(dims), (g * xmu).sum(dims)  # (C,), (C,): this rank's
        local = torch.cat([sum_g, sum_gx])
        grad_weight = (sum_gx * invstd).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_g.to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            dist.all_reduce(local)  # the global sums
            mean_g, mean_gx = local.split(mean.numel())
            mean_g, mean_gx = mean_g / ctx.total, mean_gx / ctx.total
            w = weight.to(dtype) if weight is not None else torch.ones_like(invstd)
            a = w * invstd  # (C,)
            # dx = a (g - mean_g) - a invstd^2 mean_gx (x - m), built in place in xmu's buffer: no other
            # full-size tensor than xmu (and the transient g * xmu above)
            grad_x = xmu.mul_(_expand(-a * invstd**2 * mean_gx, nd)).addcmul_(g, _expand(a, nd))
            grad_x = grad_x.sub_(_expand(a * mean_g, nd)).to(x.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of all ranks: input (B, C), (B, C, L) or (B, C, H, W), on any backend.

    In training with a process group of more than one rank, statistics are those of the concatenated global
    batch (:class:`_GlobalBatchNorm`) and the running statistics are updated as BatchNorm does (momentum,
    unbiased variance M2 / (N - 1)). In evaluation, or on one rank, it is plain BatchNorm. Every rank must call
    it the same number of times per step (two collectives per call: the statistics forward, the gradient sums
    backward).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects an input of at least 2 dimensions (B, C, ...), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or world_size() == 1:
            return super().forward(x)
        momentum, update = self.momentum, self.training and self.track_running_stats
        if update:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
                                      momentum, update)


def _expand(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ...) for broadcasting against an input of ``ndim`` dimensions."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def _on_cuda(module: _BatchNorm) -> bool:
    tensors = [t for t in (module.weight, module.running_mean) if t is not None]
    return bool(tensors) and tensors[0].is_cuda


def adopt_batchnorm_state(new: _BatchNorm, old: _BatchNorm) -> _BatchNorm:
    """``new`` holding ``old``'s parameter and buffer objects (an optimizer or an EMA callback holding them still
    holds them) and its train/eval mode: how a BatchNorm is replaced by another kind in place."""
    new._parameters.update(old._parameters)
    new._buffers.update(old._buffers)
    return new.train(old.training)


def convert_sync_batchnorm(module: nn.Module, use_torch: bool | None = None) -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module``'s tree by a synchronised one, in place, keeping the
    same parameter and buffer objects (an optimizer or an EMA callback holding them still holds them) and the
    train/eval mode; returns ``module`` (or the replacement if ``module`` itself is a BatchNorm).

    ``use_torch``: ``torch.nn.SyncBatchNorm`` (CUDA only) or :class:`SyncBatchNorm`; by default, the former
    for layers whose parameters are on a CUDA device (call this after moving the module to its device, as
    Lightning's ``configure_model`` does). Idempotent: a synchronised layer is left as it is.
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm | nn.SyncBatchNorm):
        torch_kind = _on_cuda(module) if use_torch is None else use_torch
        cls = nn.SyncBatchNorm if torch_kind else SyncBatchNorm
        return adopt_batchnorm_state(
            cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats), module)
    for name, child in module.named_children():
        new = convert_sync_batchnorm(child, use_torch)
        if new is not child:
            setattr(module, name, new)
    return module
