"""BatchNorm with statistics over groups of the batch, in one call (MoCo's one-device Shuffle-BN)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.nn.sync_batchnorm import adopt_batchnorm_state


class SplitBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are taken over ``num_splits`` groups of the batch,
    sample ``n`` in group ``n % num_splits``, in one fused ``batch_norm`` call: the (N, C, H, W) input is
    viewed as (N / s, s * C, H, W), so each (group, channel) pair is one channel of a BatchNorm with the
    weight, bias and running statistics repeated s times. This is the authors' ``SplitBatchNorm`` (MoCo's
    CIFAR-10 demo); it replaces s backbone calls on s chunks of the batch with one, with the same outputs
    and gradients.

    The running statistics move once per call, to the mean over groups of what each group's update would
    give ((1 - m) r + m mean_g, averaged over g), as in the authors' code (s sequential chunk calls would
    apply the momentum s times). With ``num_splits == 1`` or in eval mode this is ``nn.BatchNorm2d``.
    """

    num_splits: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if s == 1 or not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % s:
            raise ValueError(f"SplitBatchNorm2d: a batch of {n} images cannot be split into {s} equal groups "
                             f"(method.bn_splits={s}: use a per-device batch that is a multiple of it)")
        track = self.track_running_stats and self.running_mean is not None
        mean = self.running_mean.repeat(s) if track else None
        var = self.running_var.repeat(s) if track else None
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        momentum = 0.0 if self.momentum is None else self.momentum
        if track and self.momentum is None:  # cumulative average, as nn.BatchNorm2d
            momentum = 1.0 / float(self.num_batches_tracked + 1)
        # a view of contiguous input (a copy of channels_last input, and the output is then contiguous)
        y = F.batch_norm(x.reshape(n // s, s * c, h, w), mean, var, weight, bias, True, momentum, self.eps)
        if track:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(s, c).mean(0))
                self.running_var.copy_(var.view(s, c).mean(0))
                self.num_batches_tracked.add_(1)
        return y.view(n, c, h, w)


def convert_split_batchnorm(module: nn.Module) -> bool:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (exactly that type) by a :class:`SplitBatchNorm2d` holding
    the same parameter and buffer objects (parameter groups and EMA pairs still hold). Returns whether every
    BatchNorm of ``module`` is now split-capable (False when it also has other BatchNorm types, e.g. timm's
    ``BatchNormAct2d``, for which :func:`split_forward` falls back to one call per group)."""
    complete = True
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats, device=torch.device("meta"))
            setattr(module, name, adopt_batchnorm_state(split, child))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SplitBatchNorm2d):
            complete = False
        else:
            complete = convert_split_batchnorm(child) and complete
    return complete


@contextlib.contextmanager
def batchnorm_splits(module: nn.Module, splits: int) -> Iterator[None]:
    """Within the block, every :class:`SplitBatchNorm2d` of ``module`` takes statistics over ``splits`` groups."""
    layers = [m for m in module.modules() if isinstance(m, SplitBatchNorm2d)]
    for m in layers:
        m.num_splits = splits
    try:
        yield
    finally:
        for m in layers:
            m.num_splits = 1


def split_forward(module: nn.Module, x: torch.Tensor, splits: int, one_call: bool = True) -> torch.Tensor:
    """``module(x)`` with BatchNorm statistics over ``splits`` groups of the batch, sample ``n`` in group
    ``n % splits``: one call when ``module``'s BatchNorms are :class:`SplitBatchNorm2d` (``one_call``), else one
    call per group (the same numbers, slower)."""
    if splits == 1:
        return module(x)
    if one_call:
        with batchnorm_splits(module, splits):
            return module(x)
    out = [module(x[g::splits]) for g in range(splits)]  # (N / s, F) each
    return torch.stack(out, dim=1).flatten(0, 1)  # sample n = row n // s of group n % s
