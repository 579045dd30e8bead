"""One builder for every projector and predictor."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """``Linear -> [BN] -> ReLU`` for each hidden layer, then a final ``Linear [-> BN]``.

    ``dims = [in, hidden..., out]``. Examples from the papers:

    - SimCLR projector (Chen et al., 2020, Sec. 2.1 and B.9): ``MLP([2048, 2048, 128])``.
    - BYOL projector and predictor (Grill et al., 2020, Sec. 3.3): ``MLP([2048, 4096, 256])`` and
      ``MLP([256, 4096, 256])``.
    - SimSiam projector (Chen & He, 2021): ``MLP([2048, 2048, 2048, 2048], last_norm=True, last_affine=False)``.
    - Barlow Twins projector / VICReg expander (Zbontar et al., 2021; Bardes et al., 2022):
      ``MLP([2048, 8192, 8192, 8192], last_bias=False)``.

    Hidden linears before a BatchNorm have no bias (the BN shift replaces it).

    Args:
        dims: layer widths, at least ``[in, out]``.
        norm: BatchNorm1d after hidden linears.
        last_norm: BatchNorm1d after the output linear.
        last_affine: whether that last BatchNorm has a learnable scale and shift.
        last_bias: whether the output linear has a bias; default: only when no BatchNorm follows it.
        last_center: whether that last BatchNorm (if affine) learns its shift; ``False`` keeps the shift at 0,
            a frozen parameter (TF's ``BatchNormalization(center=False)``, SimCLR's projector output).
    """

    def __init__(self, dims: Sequence[int], norm: bool = True, last_norm: bool = False, last_affine: bool = True,
                 last_bias: bool | None = None, last_center: bool = True):
        if len(dims) < 2:
            raise ValueError(f"MLP dims={list(dims)} needs at least an input and an output width")
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(d_in, d_out, bias=not norm)]
            if norm:
                layers += [nn.BatchNorm1d(d_out)]
            layers += [nn.ReLU(inplace=True)]
        layers += [nn.Linear(dims[-2], dims[-1], bias=not last_norm if last_bias is None else last_bias)]
        if last_norm:
            layers += [nn.BatchNorm1d(dims[-1], affine=last_affine)]
        super().__init__(*layers)
        if last_norm and last_affine and not last_center:
            self[-1].bias.requires_grad_(False)  # stays 0: no gradient, no optimizer group, no weight decay
        self.in_features, self.out_features = dims[0], dims[-1]

    @classmethod
    def of_depth(cls, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, **kwargs) -> MLP:
        """``num_layers`` linears: ``in_dim -> hidden_dim x (num_layers - 1) -> out_dim``; ``kwargs`` as for ``MLP``."""
        return cls([in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim], **kwargs)
