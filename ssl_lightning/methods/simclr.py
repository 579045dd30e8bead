"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations (Chen et al., 2020)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.config import check
from ssl_lightning.distributed import gather, rank
from ssl_lightning.heads import MLP
from ssl_lightning.losses import nt_xent_loss
from ssl_lightning.methods.base import SSLMethod


class SimCLR(SSLMethod):
    """Two views per image through one encoder and a projector ``g``; NT-Xent over the 2N views with the
    negatives gathered from every device (the paper's large-batch setting, Sec. 2.2).

    Paper defaults (ImageNet): temperature 0.1, LARS with LR 0.3 x B/256 (or 0.075 x sqrt(B)), weight decay
    1e-6, 10 warmup epochs then cosine, batch 4096; both views go through the encoder as one batch so
    BatchNorm statistics cover both (the reference implementation's concatenated forward).

    As the official code (google-research/simclr ``model_util.py`` ``projection_head`` / ``tf2/model.py``
    ``ProjectionHead``, 2 layers in SimCLR v1): the projector's hidden width is the backbone width
    (``proj_hidden_dim: null``; 2048 for ResNet-50, 512 for ResNet-18), each linear is N(0, 0.01)-initialised
    without bias, the hidden BN has scale and shift, the output BN a scale only (``center=False``). The loss
    is the official one (``objective.py`` ``add_contrastive_loss``: ``reduce_mean(loss_a + loss_b)``), the sum
    of the two directions' mean cross-entropies, i.e. 2 x the mean over the 2N anchors that
    :func:`nt_xent_loss` returns; ``train/loss`` logs that sum.

    Remaining deviations from the official code: the projector has SimCLR v1's 2 layers (the tf2 code of
    SimCLR v2 defaults to 3); the ResNet's own
    initialisation is torchvision's (He-normal convolutions) rather than TF's; blur is off below 64 px by
    the data (Appendix B.9), as the official CIFAR-10 runs.

    Args:
        temperature: tau of NT-Xent, > 0.
        proj_hidden_dim: projector hidden width; ``None``: the backbone's width (the official code).
        proj_output_dim: projection width (128).
    """

    min_batch_size = 2

    def __init__(self, backbone, optimizer, scheduler=None, temperature: float = 0.1, proj_hidden_dim: int | None = None,
                 proj_output_dim: int = 128, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(temperature, (int, float)) and temperature > 0, "method.temperature", temperature, "a float > 0")
        self.temperature = temperature
        hidden = proj_hidden_dim or backbone.num_features
        self.projector = MLP([backbone.num_features, hidden, proj_output_dim], last_norm=True, last_center=False)
        for layer in self.projector:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.01)

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        n = x1.shape[0]
        h = self.backbone(torch.cat([x1, x2]))  # (2n, F)
        z1, z2 = self.projector(h).chunk(2)  # (n, D) each
        # the official objective: mean over one direction's anchors + mean over the other's = 2 x mean over all
        loss = 2 * nt_xent_loss(z1, z2, self.temperature, gather(z1), gather(z2), offset=rank() * n)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h[:n].detach(), "z": z1.detach()}
