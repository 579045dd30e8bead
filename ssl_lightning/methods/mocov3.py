"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie & He, 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks import MomentumUpdate, frozen_copy
from ssl_lightning.config import check
from ssl_lightning.distributed import gather_no_grad, rank
from ssl_lightning.heads import MLP
from ssl_lightning.losses import moco_v3_loss
from ssl_lightning.methods.base import SSLMethod


class MoCoV3(SSLMethod):
    """Each view's prediction (encoder, projector, predictor) must pick the momentum encoder's key of the
    other view among the keys of the whole batch, gathered from every rank; no queue. The loss is symmetric,
    ``ctr(q1, k2) + ctr(q2, k1)``, each term scaled by 2T (Algorithm 1).

    Paper defaults (Sec. 4 and the reference code): projector and predictor with 4096 hidden and 256 output
    units, BN on every layer (the projector's last BN without affine); the ViT recipe uses a 3-layer projector
    and a predictor ending in BN, T = 0.2, AdamW with LR 1.5e-4 x B/256 and weight decay 0.1, 40 warmup
    epochs, and a frozen random patch projection (Sec. 4.2); the ResNet recipe a 2-layer projector, a
    predictor without the last BN, T = 1.0, LARS with LR 0.6 x B/256 and weight decay 1e-6, 10 warmup
    epochs. Momentum 0.99 -> 1 on a cosine schedule; BYOL's asymmetric augmentation.

    What the official code (facebookresearch/moco-v3) sets outside this module comes from the method's
    recipe (``conf/recipe/``): ResNets with zero-init residual (``main_moco.py``:
    ``zero_init_residual=True``); ViTs as ``vits.py`` ``VisionTransformerMoCo``: 12 heads for ViT-S, q/k/v
    Xavier-uniform as three matrices, [CLS] N(0, 1e-6), patch projection Xavier-uniform with zero bias,
    frozen by ``freeze_patch_embed`` (``--stop-grad-conv1``). Remaining deviations, with reasons: our ViT's
    fixed sin-cos position embedding orders the row and column halves as MAE's (the same function up to a
    permutation of channels); LARS excludes biases and BN parameters as the reference LARS does
    (``moco/optimizer.py``: ``if p.ndim > 1``); the momentum schedule is per step as the reference (``--moco-m-cos``).

    Args:
        proj_num_layers: linear layers of the projector (3 for ViT, 2 for ResNet).
        pred_last_norm: BN after the predictor's output layer (ViT: yes; ResNet: no).
        temperature: T > 0.
        base_tau, final_tau: momentum at the first and last step, in [0, 1].
        freeze_patch_embed: keep the ViT's patch projection at its random initialisation (Sec. 4.2).
    """

    min_batch_size = 2
    num_views = 2

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 4096, proj_output_dim: int = 256,
                 proj_num_layers: int = 3, pred_hidden_dim: int = 4096, pred_last_norm: bool = True,
                 temperature: float = 0.2, base_tau: float = 0.99, final_tau: float = 1.0,
                 freeze_patch_embed: bool = False, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(temperature, (int, float)) and temperature > 0, "method.temperature", temperature, "a float > 0")
        check(isinstance(proj_num_layers, int) and proj_num_layers >= 1, "method.proj_num_layers", proj_num_layers,
              "an integer >= 1 (3 for ViT, 2 for ResNet)")
        if freeze_patch_embed:
            check(hasattr(backbone, "patch_embed"), "method.freeze_patch_embed", freeze_patch_embed,
                  f"false for {type(backbone).__name__}, which has no patch embedding (only ViTs have one)")
            backbone.patch_embed.requires_grad_(False)
        self.temperature = temperature
        self.momentum_update = MomentumUpdate(base_tau, final_tau)
        self.projector = MLP.of_depth(backbone.num_features, proj_hidden_dim, proj_output_dim, proj_num_layers,
                                      last_norm=True, last_affine=False)
        self.predictor = MLP([proj_output_dim, pred_hidden_dim, proj_output_dim], last_norm=pred_last_norm, last_affine=False)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def configure_callbacks(self):
        return [self.momentum_update]

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's forward: (B, 3, H, W) -> L2-normalised keys (B, D)."""
        return F.normalize(self.key_projector(self.key_backbone(x)).float(), dim=1)

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)  # (B, F), each view separately (reference code)
        z1, z2 = self.projector(h1), self.projector(h2)  # (B, D)
        q1, q2 = self.predictor(z1), self.predictor(z2)
        k1, k2 = gather_no_grad(self.keys(x1)), gather_no_grad(self.keys(x2))  # (W*B, D)
        offset = rank() * x1.shape[0]
        loss = moco_v3_loss(q1, k2, self.temperature, offset) + moco_v3_loss(q2, k1, self.temperature, offset)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": z1.detach()}
