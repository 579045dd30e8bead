"""iBOT: Image BERT Pre-Training with Online Tokenizer (Zhou et al., 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch
from torch import nn

from ssl_lightning.backbones.vit import VisionTransformer
from ssl_lightning.callbacks import frozen_copy
from ssl_lightning.callbacks.dino import teacher_temperature
from ssl_lightning.callbacks.steps import host_scalar
from ssl_lightning.config import ConfigError, check
from ssl_lightning.heads import WeightNormLinear
from ssl_lightning.losses import dino_loss, entropy, ibot_patch_loss, teacher_probs
from ssl_lightning.methods.dino import DINO, _is_number


class IBOT(DINO):
    """DINO's [CLS] self-distillation plus masked image modelling with the teacher as an online tokenizer
    (Sec. 3, Algorithm 1): the student sees blockwise-masked global crops (mask token in place of the
    masked patch embeddings) and predicts, at the masked positions, the teacher's patch-token distributions
    of the same, un-masked crop; ``L = lambda1 * L_[CLS] + lambda2 * L_MIM``.

    Paper / official defaults (bytedance/ibot, ``main_ibot.py``; the README's ViT-S/16 command): the
    DINO head (3 layers, 2048, 256) *shared* between [CLS] and patch tokens (``--shared_head true``;
    K = 8192 outputs), ``norm_last_layer`` false for ViT-S; a separate patch center (momentum 0.9, the
    mean over all patches of the global batch) and patch temperatures 0.04 -> 0.07 over 30 epochs;
    lambda1 = lambda2 = 1; masks on each global crop with probability 0.5, ratio uniform in [0.1, 0.5]
    (``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``; :class:`~ssl_lightning.transforms.RandomRatioBlockwiseMasking`);
    local crops go through the student unmasked and give [CLS] terms only; a learned mask token (zeros,
    weight-decayed as in the official parameter groups). Optimisation, EMA, clipping and the frozen last
    layer (both last layers) are DINO's.

    Batches: ``([view_1, ..., view_V, masks (B, G, N)], labels)`` from
    :class:`~ssl_lightning.transforms.MaskedMultiViewTransform`. ``h`` is the student's [CLS] feature of
    the first (possibly masked) global crop. Logs DINO's signals for the [CLS] distribution, plus
    ``train/loss_cls``, ``train/loss_patch``, ``train/patch_teacher_entropy`` and ``train/patch_teacher_temp``.

    Deviation: with ``shared_head=false`` the teacher gets its own patch layer, the EMA of the student's
    (the official code keeps the teacher's head shared, ``--shared_head_teacher true``).

    With ``head_bn`` (the official ``--norm bn`` head), the head's BatchNorm computes one set of statistics
    over the [CLS] and patch tokens together, as the official ``CustomSequential`` does (``head_bn_stats:
    joint``, the default). ``head_bn_stats: separate`` normalises the [CLS] tokens with their own batch
    statistics and the patch tokens with theirs (same affine parameters): with 16 patches per [CLS] the joint
    statistics are the patches', and on the digits the [CLS] output then went to the uniform distribution
    (kNN 53.5 -> 42.1 in 20 epochs, also without masks or the patch loss), where separate statistics learn
    (56.8, linear 74.4; ``experiment=ibot_digits``). Not in the official code; no preset for real data uses it.

    Args (beyond DINO's):
        patch_out_dim: K of the patch layer when not shared (shared: ``out_dim``).
        shared_head: one last layer for [CLS] and patch tokens.
        warmup_teacher_patch_temp, teacher_patch_temp: the patch temperatures.
        lambda1, lambda2: loss weights, >= 0.
        head_bn_stats: ``joint`` or ``separate`` BatchNorm statistics for [CLS] and patch tokens (with
            ``head_bn`` only).
    """

    def __init__(self, backbone, optimizer, scheduler=None, out_dim: int = 8192, patch_out_dim: int = 8192,
                 shared_head: bool = True, warmup_teacher_patch_temp: float = 0.04, teacher_patch_temp: float = 0.07,
                 lambda1: float = 1.0, lambda2: float = 1.0, head_bn_stats: str = "joint", **dino):
        check(isinstance(backbone, VisionTransformer), "backbone", type(backbone).__name__,
              "a ViT (e.g. backbone=vit_small_multicrop): iBOT masks image patches")
        super().__init__(backbone, optimizer, scheduler, out_dim=out_dim, **dino)
        for key, value in (("warmup_teacher_patch_temp", warmup_teacher_patch_temp), ("teacher_patch_temp", teacher_patch_temp)):
            check(_is_number(value) and value > 0, f"method.{key}", value, "a temperature > 0")
        for key, value in (("lambda1", lambda1), ("lambda2", lambda2)):
            check(_is_number(value) and value >= 0, f"method.{key}", value, "a loss weight >= 0")
        check(isinstance(shared_head, bool), "method.shared_head", shared_head, "true or false")
        check(head_bn_stats in ("joint", "separate"), "method.head_bn_stats", head_bn_stats, "joint or separate")
        check(head_bn_stats == "joint" or dino.get("head_bn", False), "method.head_bn_stats", head_bn_stats,
              "joint unless method.head_bn=true (without BatchNorm in the head there are no statistics to separate)")
        self.separate_bn_stats = head_bn_stats == "separate"
        self.warmup_teacher_patch_temp, self.final_teacher_patch_temp = warmup_teacher_patch_temp, teacher_patch_temp
        self.lambda1, self.lambda2, self.shared_head = lambda1, lambda2, shared_head
        self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        if shared_head:
            self.patch_last_layer, self.teacher_patch_last_layer = None, None
            patch_out_dim = out_dim
        else:
            self.patch_last_layer = WeightNormLinear(self.head.last_layer.weight_v.shape[1], patch_out_dim,
                                                     not self.head.last_layer.weight_g.requires_grad)
            self.teacher_patch_last_layer = frozen_copy(self.patch_last_layer)
        self.register_buffer("patch_center", torch.zeros(patch_out_dim))
        self.center_sums = torch.zeros(out_dim + patch_out_dim + 1)

    def check_views(self, view_sizes: Sequence[int]) -> None:
        super().check_views(view_sizes)
        grid = self.backbone.grid_size
        check(view_sizes[0] == self.backbone.image_size, "augment.views", f"global crops of {view_sizes[0]} px",
              f"global crops of the ViT's image size {self.backbone.image_size} px ({grid}x{grid} masks)")

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = super().momentum_pairs()
        if self.patch_last_layer is not None:
            pairs.append((self.patch_last_layer, self.teacher_patch_last_layer))
        return pairs

    def last_layer_parameters(self) -> list[nn.Parameter]:
        extra = list(self.patch_last_layer.parameters()) if self.patch_last_layer is not None else []
        return super().last_layer_parameters() + extra

    def centers(self) -> list[torch.Tensor]:
        return [self.center, self.patch_center]

    def teacher_patch_temp(self) -> float:
        return teacher_temperature(self.current_epoch, self.warmup_teacher_patch_temp, self.final_teacher_patch_temp,
                                   self.warmup_teacher_temp_epochs)

    def heads(self, tokens: torch.Tensor, teacher: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1 + N, D) tokens -> [CLS] logits (B, K), patch logits (B, N, K') and the [CLS] bottleneck."""
        head = self.teacher_head if teacher else self.head
        patch_layer = self.teacher_patch_last_layer if teacher else self.patch_last_layer
        if self.separate_bn_stats:  # [CLS] and patches each through the head's BatchNorm with their own statistics
            b = torch.cat([head.bottleneck(tokens[:, :1]), head.bottleneck(tokens[:, 1:])], dim=1)
        else:
            b = head.bottleneck(tokens)  # (B, 1 + N, bottleneck)
        patch = (patch_layer or head.last_layer)(b[:, 1:])
        return head.last_layer(b[:, 0]), patch, b[:, 0]

    def training_step(self, batch, batch_idx: int):
        (*views, masks), _ = batch
        g, n = self.num_global_crops, views[0].shape[0]
        if len(views) < max(2, g) or masks.ndim != 3 or masks.shape[1] != g:
            raise ConfigError(f"method.num_global_crops={g} is not allowed: the batch has {len(views)} views and "
                              f"masks of shape {tuple(masks.shape)} (expected (B, {g}, N))")
        global_views = torch.cat(views[:g])  # (G*B, 3, H, W)
        mask = masks.transpose(0, 1).reshape(g * n, -1)  # (G*B, N), in the order of global_views
        with torch.no_grad():
            t_cls, t_patch, _ = self.heads(self.teacher_backbone.forward_tokens(global_views), teacher=True)
        tokens = self.backbone.forward_tokens(global_views, bool_masked_pos=mask, mask_token=self.mask_token)
        s_cls, s_patch, b = self.heads(tokens)
        h = self.backbone.pool(tokens)  # (G*B, F)
        if len(views) > g:  # local crops: [CLS] only, no masks; one backbone call per run of same-size crops
            local = [self.backbone.forward_tokens(torch.cat(list(run)))[:, 0]
                     for _, run in groupby(views[g:], key=lambda v: v.shape[-2:])]
            s_cls = torch.cat([s_cls, self.head(torch.cat(local))])
        temp, patch_temp = self.teacher_temp(), self.teacher_patch_temp()
        probs = teacher_probs(t_cls, self.center, temp)  # (G*B, K)
        patch_probs = teacher_probs(t_patch, self.patch_center, patch_temp)  # (G*B, N, K')
        loss_cls = dino_loss(s_cls.split(n), probs.split(n), self.student_temp)
        loss_patch = ibot_patch_loss(s_patch.split(n), patch_probs.split(n), mask.split(n), self.student_temp)
        loss = self.lambda1 * loss_cls + self.lambda2 * loss_patch
        self.accumulate_center(t_cls.float().sum(dim=0), t_patch.float().mean(dim=1).sum(dim=0), count=t_cls.shape[0])
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_step("train/loss_cls", loss_cls)
        self.log_step("train/loss_patch", loss_patch)
        self.log_signals(loss_cls, probs, temp)
        if self.logs_this_step():
            with torch.no_grad():
                self.log_step("train/patch_teacher_entropy", entropy(patch_probs))
            self.log_step("train/patch_teacher_temp", host_scalar(patch_temp))
        self.log_lr()
        return {"loss": loss, "h": h[:n].detach(), "z": b[:n].detach()}
