"""BYOL: Bootstrap Your Own Latent (Grill et al., 2020)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.callbacks import MomentumUpdate, frozen_copy
from ssl_lightning.heads import MLP
from ssl_lightning.losses import byol_loss
from ssl_lightning.methods.base import SSLMethod


class BYOL(SSLMethod):
    """An online network (encoder, projector, predictor) regresses a momentum teacher's projection of the
    other view; the loss is symmetrised over the two views (Sec. 3.1, Eq. 2 and its swap).

    Paper defaults: projector and predictor 4096 hidden / 256 out (BN, ReLU); teacher = EMA of encoder and
    projector with tau from 0.996 to 1 on a cosine schedule (Sec. 3.2); LARS with LR 0.2 x B/256, weight
    decay 1.5e-6, biases and BN excluded, 10 warmup epochs then cosine. Each view goes through the encoder
    separately, as in the reference implementation.

    The official code (deepmind-research ``byol/``) also sets, outside this module: a zero-init-residual
    ResNet (haiku's ``BlockV1``, ``conf/recipe/zero_init_residual.yaml``), and LR, weight decay and tau per
    schedule length (``configs/byol.py``: 1000 epochs 0.2 / 1.5e-6 / 0.996, the default; ``method=byol_300ep``,
    ``byol_100ep``, ``byol_40ep``). Remaining deviation: the official projector's hidden linear has a bias
    before its BN (a no-op shift, dropped here).

    Args:
        base_tau, final_tau: EMA momentum at the first and last step, in [0, 1].
    """

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 4096, proj_output_dim: int = 256,
                 pred_hidden_dim: int = 4096, base_tau: float = 0.996, final_tau: float = 1.0, lr_scaling: str = "linear",
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        self.momentum_update = MomentumUpdate(base_tau, final_tau)  # validates tau before training
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_output_dim])
        self.predictor = MLP([proj_output_dim, pred_hidden_dim, proj_output_dim])
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_projector = frozen_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.projector, self.teacher_projector)]

    def configure_callbacks(self):
        return [self.momentum_update]

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)  # (B, F)
        z1, z2 = self.projector(h1), self.projector(h2)  # (B, D)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1 = self.teacher_projector(self.teacher_backbone(x1))
            t2 = self.teacher_projector(self.teacher_backbone(x2))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": z1.detach()}
