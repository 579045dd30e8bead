"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes et al., 2022)."""

from __future__ import annotations

from ssl_lightning.config import check
from ssl_lightning.distributed import gather
from ssl_lightning.heads import MLP
from ssl_lightning.losses import vicreg_loss
from ssl_lightning.methods.base import SSLMethod


class VICReg(SSLMethod):
    """Two views through one encoder and expander; the loss pulls the two embeddings together (invariance),
    keeps every dimension's standard deviation above ``gamma`` (variance) and decorrelates the dimensions
    (covariance), each branch regularised on its own (Sec. 3, Eq. 6).

    Paper defaults (Sec. 4.1 and Appendix C): expander 8192-8192-8192 as Barlow Twins' (Linear-BN-ReLU twice,
    then a plain Linear without bias); lambda = mu = 25, nu = 1; gamma = 1, eps = 1e-4; LARS with base LR 0.2
    x B/256, weight decay 1e-6, batch 2048, 1000 epochs, 10 warmup epochs then cosine decay to 0.001 x
    (official code); biases and BN parameters excluded from decay and LARS adaptation; BYOL's augmentation.

    Both views are gathered from all devices *with gradients* before the loss, so variance and covariance
    are statistics of the global batch and the gradient is exact.

    Logs ``train/invariance``, ``train/variance`` and ``train/covariance`` (unweighted terms) besides the loss.

    Zero-init residual ResNet as the official ``main_vicreg.py`` (``zero_init_residual=True``), through
    ``conf/recipe/zero_init_residual.yaml``. Its linear evaluation (``evaluate.py``) resizes to 256 and
    centre-crops 224 bilinearly (torchvision's default), as ``data.eval_crop_ratio`` does at 224 px.

    Args:
        proj_hidden_dim, proj_output_dim: expander widths (8192, 8192).
        sim_coeff: lambda, weight of the invariance term, > 0.
        std_coeff: mu, weight of the variance term, > 0 (without it the embeddings collapse).
        cov_coeff: nu, weight of the covariance term, >= 0 (0 is the paper's ablation, Table 4).
        gamma: target standard deviation, > 0.
        eps: added to the variance before the square root, > 0.
    """

    num_views = 2
    min_batch_size = 2  # batch statistics

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 8192, proj_output_dim: int = 8192,
                 sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0, gamma: float = 1.0,
                 eps: float = 1e-4, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        for key, value in (("proj_hidden_dim", proj_hidden_dim), ("proj_output_dim", proj_output_dim)):
            check(type(value) is int and value >= 1, f"method.{key}", value, "a layer width, an integer >= 1")
        number = lambda v: type(v) in (int, float)  # noqa: E731
        check(number(sim_coeff) and sim_coeff > 0, "method.sim_coeff", sim_coeff, "a weight > 0 for the invariance term")
        check(number(std_coeff) and std_coeff > 0, "method.std_coeff", std_coeff,
              "a weight > 0 for the variance term (without it the embeddings collapse)")
        check(number(cov_coeff) and cov_coeff >= 0, "method.cov_coeff", cov_coeff, "a weight >= 0 for the covariance term")
        check(number(gamma) and gamma > 0, "method.gamma", gamma, "a target standard deviation > 0")
        check(number(eps) and eps > 0, "method.eps", eps, "a small constant > 0")
        self.sim_coeff, self.std_coeff, self.cov_coeff, self.gamma, self.eps = sim_coeff, std_coeff, cov_coeff, gamma, eps
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_hidden_dim, proj_output_dim], last_bias=False)

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        h1, h2 = self.backbone(x1), self.backbone(x2)  # (B, F)
        z1, z2 = self.projector(h1), self.projector(h2)  # (B, D)
        loss, terms = vicreg_loss(gather(z1), gather(z2), self.sim_coeff, self.std_coeff, self.cov_coeff,
                                  self.gamma, self.eps)  # global batch (W*B, D)
        self.log_step("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log_step(f"train/{name}", value)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": z1.detach()}
