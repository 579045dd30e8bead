"""DINO's projection head (Caron et al., 2021), also iBOT's (Zhou et al., 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """A bias-free linear layer with weight normalisation (Salimans & Kingma, 2016): ``W = g * V / ||V||``,
    one norm per output row. The same parametrisation as ``nn.utils.weight_norm(nn.Linear(..., bias=False))``
    in the official DINO head (``weight_v`` (K, D), ``weight_g`` (K, 1), g initialised to 1), written out so
    that teachers copy it with ``deepcopy`` and its parameters have plain names.

    Args:
        in_dim, out_dim: D and K.
        norm_last_layer: ``True`` freezes g at 1, so every row of W has unit norm (the official
            ``--norm_last_layer``, default true; the ViT-S/16 runs use false).
    """

    def __init__(self, in_dim: int, out_dim: int, norm_last_layer: bool = True):
        super().__init__()
        v = torch.empty(out_dim, in_dim)
        nn.init.kaiming_uniform_(v, a=5**0.5)  # nn.Linear's default initialisation, as the official layer
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class TokenBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the last dimension of a (..., C) input, statistics over every leading position
    (samples, and tokens for iBOT's patch heads: what the official iBOT head's ``CustomSequential`` computes by
    transposing (B, N, C) to (B, C, N))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class DINOHead(nn.Module):
    """DINO's head (Sec. 3.1 and Appendix; facebookresearch/dino, ``vision_transformer.py``, ``DINOHead``):
    a ``num_layers``-layer MLP (``in -> 2048 -> 2048 -> 256``, GELU, no BatchNorm), L2-normalisation of the
    256-d bottleneck, then a weight-normalised bias-free linear layer to K = 65536 dimensions. MLP weights
    are initialised from a truncated normal with std 0.02 and zero biases, as in the official head.

    ``bottleneck(x)`` gives the normalised bottleneck, so iBOT can put a second last layer on it.

    Args:
        in_dim: backbone features.
        out_dim: K.
        hidden_dim, bottleneck_dim, num_layers: 2048, 256, 3.
        norm_last_layer: see :class:`WeightNormLinear`.
        use_bn: a BatchNorm after each hidden layer, before its GELU (the official ``--use_bn_in_head``,
            default false).
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):  # the hidden layers
            layers += [nn.Linear(d_in, d_out), *([TokenBatchNorm1d(d_out)] if use_bn else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-2], dims[-1]))  # nothing after the bottleneck layer
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer)
        self.out_dim = out_dim

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., bottleneck_dim), L2-normalised."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., K) logits."""
        return self.last_layer(self.bottleneck(x))
