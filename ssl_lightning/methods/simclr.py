"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations (Chen et al., 2020)."""

from __future__ import annotations

import torch

from ssl_lightning.config import check
from ssl_lightning.distributed import gather, rank
from ssl_lightning.heads import MLP
from ssl_lightning.losses import nt_xent_loss
from ssl_lightning.methods.base import SSLMethod


class SimCLR(SSLMethod):
    """Two views per image through one encoder and a projector ``g``; NT-Xent over the 2N views with the
    negatives gathered from every device (the paper's large-batch setting, Sec. 2.2).

    Paper defaults (ImageNet): projector 2048-2048-128 (BN, ReLU), temperature 0.1, LARS with LR 0.3 x B/256,
    weight decay 1e-6, 10 warmup epochs then cosine, batch 4096; both views go through the encoder as one
    batch so BatchNorm statistics cover both (the reference implementation's concatenated forward).

    Args:
        temperature: tau of NT-Xent, > 0.
        proj_hidden_dim, proj_output_dim: projector widths.
    """

    min_batch_size = 2

    def __init__(self, backbone, optimizer, scheduler=None, temperature: float = 0.1, proj_hidden_dim: int = 2048,
                 proj_output_dim: int = 128, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(temperature, (int, float)) and temperature > 0, "method.temperature", temperature, "a float > 0")
        self.temperature = temperature
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_output_dim])

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        n = x1.shape[0]
        h = self.backbone(torch.cat([x1, x2]))  # (2n, F)
        z1, z2 = self.projector(h).chunk(2)  # (n, D) each
        loss = nt_xent_loss(z1, z2, self.temperature, gather(z1), gather(z2), offset=rank() * n)
        self.log("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h[:n].detach(), "z": z1.detach()}
