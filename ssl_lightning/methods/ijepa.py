"""I-JEPA: Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture (Assran et al., 2023)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.backbones.vit import VisionTransformer
from ssl_lightning.callbacks import MomentumUpdate, WeightDecaySchedule, frozen_copy
from ssl_lightning.callbacks.steps import host_scalar
from ssl_lightning.config import check
from ssl_lightning.heads import IJEPAPredictor
from ssl_lightning.losses import block_targets, ijepa_loss
from ssl_lightning.losses.ijepa import IJEPA_LOSSES
from ssl_lightning.methods.base import SSLMethod


class IJEPA(SSLMethod):
    """The context encoder (the backbone, a ViT) encodes the patches of the context block; a narrow ViT
    predictor predicts from them, at the positions of each of M = 4 target blocks, the target encoder's
    layer-normalised representations of those patches; the target encoder, an EMA of the context encoder,
    encodes the full image (Sec. 3, Fig. 3). No augmentation beyond the crop; no negatives, no projector.

    Paper and official defaults (facebookresearch/ijepa, ``configs/in1k_vith14_ep300.yaml``, ``src/train.py``,
    ``src/helper.py``): predictor 12 blocks x 384 wide for ViT-H/14; AdamW (betas 0.9, 0.999), LR warmed up
    linearly from 2e-4 to 1e-3 over 40 epochs then cosine to 1e-6 at batch 2048, weight decay 0.04 -> 0.4 on a
    cosine schedule per step (not on biases and norms), EMA momentum 0.996 -> 1.0 linear per step, 300 epochs,
    random resized crop (0.3, 1) only, bf16. Masks: :class:`~ssl_lightning.transforms.MultiBlockMasking`.

    Batches come from :class:`~ssl_lightning.transforms.MultiBlockTransform`:
    ``((images (B, 3, H, W), context_ids (B, Nc), target_ids (B, M, Nt)), labels)``.

    Features: ``forward`` (kNN, validation, offline evaluation) is the context encoder's mean-pooled output on
    the full image; ``training_step`` returns the same as ``h`` (the online linear probe's training features),
    from an extra no-grad forward of the full image (``probe_full_image=false`` returns instead the mean of
    the context-block encoding, which is free but a different input distribution from the full validation
    images), and as ``z`` (the collapse monitor) the target encoder's mean-pooled output on the full image.
    The paper evaluates the target encoder (Appendix B); the two are close late in training.

    Deviations: our ViT prepends a [CLS] token, which the encoders carry (as an extra token the predictor
    does not see) and pooling ignores (``backbone.global_pool=mean`` is required); the encoder keeps our
    ViT's initialisation (the official uses truncated-normal std 0.02 with depth rescaling, which the
    predictor here follows); the loss default is the official code's smooth L1 (``loss: l2`` for the paper's
    Eq. 1); the target encoder always runs in eval mode (no stochastic depth).

    Args:
        predictor_dim, predictor_depth, predictor_num_heads: predictor sizes (``None`` heads: the encoder's).
        loss: ``"smooth_l1"`` (official code) or ``"l2"`` (paper's Eq. 1), see :func:`~ssl_lightning.losses.ijepa_loss`.
        base_tau, final_tau, tau_schedule: EMA momentum of the target encoder (0.996 -> 1.0, ``linear``).
        weight_decay_end: weight decay at the last step; it starts at ``optimizer.weight_decay`` (0.04 -> 0.4).
        probe_full_image: ``h`` from the context encoder on the full image (one more forward, no gradient).
    """

    num_views = 1
    min_batch_size = 1

    def __init__(self, backbone, optimizer, scheduler=None, predictor_dim: int = 384, predictor_depth: int = 12,
                 predictor_num_heads: int | None = None, loss: str = "smooth_l1", base_tau: float = 0.996,
                 final_tau: float = 1.0, tau_schedule: str = "linear", weight_decay_end: float = 0.4,
                 probe_full_image: bool = True, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(backbone, VisionTransformer), "backbone", type(backbone).__name__,
              "a ViT (e.g. backbone=vit_tiny_p2_mean): I-JEPA's encoders run on the patches of its mask blocks")
        check(backbone.global_pool == "mean", "backbone.global_pool", backbone.global_pool,
              "'mean' for I-JEPA: no loss trains the [CLS] output, so features are the mean of the patch tokens")
        check(loss in IJEPA_LOSSES, "method.loss", loss, f"one of {', '.join(IJEPA_LOSSES)}")
        heads = predictor_num_heads if predictor_num_heads is not None else encoder_heads(backbone)
        check(isinstance(probe_full_image, bool), "method.probe_full_image", probe_full_image, "true or false")
        self.loss_kind, self.probe_full_image = loss, probe_full_image
        self.predictor = IJEPAPredictor(backbone.grid_size, backbone.embed_dim, predictor_dim, predictor_depth, heads)
        self.target_backbone = frozen_copy(backbone).eval()
        self.momentum_update = MomentumUpdate(base_tau, final_tau, schedule=tau_schedule)  # validates before training
        weight_decay = getattr(optimizer, "keywords", {}).get("weight_decay", 0.0)
        self.weight_decay_schedule = WeightDecaySchedule(weight_decay, weight_decay_end)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone)]

    def configure_callbacks(self):
        return [self.momentum_update, self.weight_decay_schedule]

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_backbone.eval()  # a fixed function of its weights: no stochastic depth or dropout
        return self

    def forward_ijepa(self, images: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor):
        """The loss, the context encoder's output (B, 1 + Nc, D) and the target encoder's patch tokens (B, N, D)."""
        with torch.no_grad():
            tokens = self.target_backbone.forward_tokens(images)[:, 1:]  # (B, N, D)
            target = block_targets(tokens, target_ids)  # (B, M, Nt, D)
        latent = self.backbone.forward_tokens(images, ids_keep=context_ids)  # (B, 1 + Nc, D)
        pred = self.predictor(latent[:, 1:], context_ids, target_ids)  # (B, M, Nt, D)
        return ijepa_loss(pred, target, self.loss_kind), latent, tokens

    def training_step(self, batch, batch_idx: int):
        (images, context_ids, target_ids), _ = batch
        loss, latent, tokens = self.forward_ijepa(images, context_ids, target_ids)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        # shapes are host-side ints: logging them reads nothing back from the device
        self.log_step("train/context_patches", host_scalar(context_ids.shape[1]))
        self.log_step("train/target_patches", host_scalar(target_ids.shape[2]))
        if self.probe_full_image:
            with torch.no_grad():
                h = self.backbone(images)  # (B, D): what kNN and validation see
        else:
            h = self.backbone.pool(latent).detach()
        return {"loss": loss, "h": h, "z": tokens.mean(dim=1)}


def encoder_heads(backbone: VisionTransformer) -> int:
    """The encoder's number of attention heads (the official predictor uses the encoder's)."""
    return backbone.blocks[0].attn.num_heads
