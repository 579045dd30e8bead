"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, 2021)."""

from __future__ import annotations

from ssl_lightning.config import check
from ssl_lightning.heads import MLP
from ssl_lightning.losses import simsiam_loss
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.optim import param_groups


class SimSiam(SSLMethod):
    """Two views through one encoder ``f`` (backbone + projector); a predictor ``h`` on each side regresses
    the other view's projection under a stop-gradient: ``L = D(p1, z2) / 2 + D(p2, z1) / 2`` with ``D`` the
    negative cosine (Sec. 3, Algorithm 1). No negatives, no momentum encoder.

    Paper defaults (Sec. 3, "Baseline settings"): projector of 3 layers, 2048 wide, BN on every layer
    including the output, whose BN has no affine parameters and whose linear has no ReLU; predictor
    2048-512-2048 (a bottleneck, BN + ReLU on the hidden layer only); SGD with LR 0.05 x B/256, momentum 0.9,
    weight decay 1e-4, cosine decay without warmup, batch 512; the predictor's LR is not decayed (Sec. 4.4,
    Table 1: "fixed lr of h"), so it sits in its own parameter groups with ``fixed_lr``. As everywhere in
    this package, biases and BN parameters get no weight decay (the official code decays them too). Both
    views go through the encoder separately, as in the reference implementation.

    Zero-init residual ResNet as the official ``simsiam/builder.py`` (``zero_init_residual=True``), through
    ``conf/recipe/zero_init_residual.yaml``.

    Args:
        proj_hidden_dim, proj_output_dim: projector widths (2048, 2048).
        proj_layers: projector depth, 3 (ImageNet); the paper's CIFAR-10 experiments use 2.
        pred_hidden_dim: predictor bottleneck (512).
    """

    num_views = 2
    min_batch_size = 2  # BatchNorm in the heads

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 2048, proj_output_dim: int = 2048,
                 pred_hidden_dim: int = 512, proj_layers: int = 3, lr_scaling: str = "linear", compile: bool = False,
                 sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_output_dim", proj_output_dim),
                           ("pred_hidden_dim", pred_hidden_dim)):
            check(type(value) is int and value >= 1, f"method.{key}", value, "a layer width, an integer >= 1")
        check(type(proj_layers) is int and proj_layers >= 2, "method.proj_layers", proj_layers,
              "a number of projector layers >= 2 (3 in the paper, 2 in its CIFAR-10 experiments)")
        self.projector = MLP.of_depth(backbone.num_features, proj_hidden_dim, proj_output_dim, proj_layers,
                                      last_norm=True, last_affine=False)
        self.predictor = MLP([proj_output_dim, pred_hidden_dim, proj_output_dim])

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Backbone and projector decay and follow the schedule; the predictor's groups keep a fixed LR. The
        split without decay on biases and BN applies inside each."""
        predictor = {id(p) for p in self.predictor.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in predictor]} for g in param_groups(self, weight_decay)]
        return groups + [{**g, "fixed_lr": True} for g in param_groups(self.predictor, weight_decay)]

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)  # (B, F)
        z1, z2 = self.projector(h1), self.projector(h2)  # (B, D)
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, D)
        loss = simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": z1.detach()}
