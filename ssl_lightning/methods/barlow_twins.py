"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al., 2021)."""

from __future__ import annotations

from ssl_lightning.config import check
from ssl_lightning.distributed import gather
from ssl_lightning.heads import MLP
from ssl_lightning.losses import barlow_twins_loss
from ssl_lightning.methods.base import SSLMethod


class BarlowTwins(SSLMethod):
    """Two views through one encoder and projector; the cross-correlation matrix of the two batches of
    embeddings, each standardised over the batch, is driven to the identity (Sec. 2, Eq. 1-2, Algorithm 1).

    Paper defaults (Sec. 4, "Implementation details"): projector 8192-8192-8192 (Linear-BN-ReLU twice, then
    a plain Linear without bias, as in the official code); lambda = 0.0051; LARS, batch 2048, 1000 epochs,
    LR 0.2 for weights and 0.0048 for biases and BN parameters, both x B/256, 10 warmup epochs then cosine
    decay by a factor of 1000, weight decay 1.5e-6 (the official code's default is 1e-6), biases and BN
    parameters excluded from weight decay and LARS adaptation; BYOL's augmentation.

    The embeddings of both views are gathered from all devices *with gradients* before the standardisation
    and the correlation, so the statistics are those of the global batch and the gradient is exact.

    Zero-init residual ResNet as the official ``main.py`` (``resnet50(zero_init_residual=True)``), through
    ``conf/recipe/zero_init_residual.yaml``. Its linear evaluation (``evaluate.py``) resizes to 256 and
    centre-crops 224 bilinearly (torchvision's default), as ``data.eval_crop_ratio`` does at 224 px.

    Args:
        proj_hidden_dim, proj_output_dim: projector widths (8192, 8192).
        lambd: weight of the off-diagonal (redundancy-reduction) term, > 0.
        bias_lr: base LR (per 256 images) of biases and BN parameters, > 0; weights use ``optimizer.lr``.
    """

    num_views = 2
    min_batch_size = 2  # batch statistics

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 8192, proj_output_dim: int = 8192,
                 lambd: float = 0.0051, bias_lr: float = 0.0048, lr_scaling: str = "linear",
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_output_dim", proj_output_dim)):
            check(type(value) is int and value >= 1, f"method.{key}", value, "a layer width, an integer >= 1")
        check(type(lambd) in (int, float) and lambd > 0, "method.lambd", lambd,
              "a weight > 0 for the redundancy-reduction term (the paper's 0.0051 for 8192 dimensions)")
        check(type(bias_lr) in (int, float) and bias_lr > 0, "method.bias_lr", bias_lr, "a base LR > 0")
        self.lambd, self.bias_lr = lambd, bias_lr
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_hidden_dim, proj_output_dim], last_bias=False)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Weights at ``optimizer.lr`` x B/256; biases and BN parameters (the undecayed group) at ``bias_lr`` x B/256."""
        decay, no_decay = super().parameter_groups(weight_decay)
        return [decay, {**no_decay, "lr": self.learning_rate(self.bias_lr)}]

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)  # (B, F)
        z1, z2 = self.projector(h1), self.projector(h2)  # (B, D)
        loss = barlow_twins_loss(gather(z1), gather(z2), self.lambd)  # global batch (W*B, D)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": z1.detach()}
