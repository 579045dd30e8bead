"""DINO: Emerging Properties in Self-Supervised Vision Transformers (Caron et al., 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch
from torch import nn

from ssl_lightning.callbacks import CenterUpdate, FreezeLastLayer, MomentumUpdate, WeightDecaySchedule, frozen_copy
from ssl_lightning.callbacks.dino import teacher_temperature
from ssl_lightning.callbacks.steps import host_scalar
from ssl_lightning.config import ConfigError, check
from ssl_lightning.distributed import world_size
from ssl_lightning.heads import DINOHead
from ssl_lightning.losses import dino_loss, entropy, teacher_probs
from ssl_lightning.methods.base import SSLMethod


class DINO(SSLMethod):
    """Self-distillation with no labels (Sec. 3.1, Algorithm 1): a student (backbone + DINO head) matches,
    on every crop, the output distribution of a momentum teacher on the *other* global crops; the
    teacher's outputs are centred by an EMA of their batch mean and sharpened by a low temperature.

    Paper / official defaults (facebookresearch/dino, ``main_dino.py``): head 3-layer MLP 2048 (GELU) ->
    256, L2-normalised, weight-normalised last layer to K = 65536 (``norm_last_layer`` true), frozen during
    epoch 1; student temperature 0.1, teacher 0.04 -> 0.07 linearly over 30 epochs (per epoch); center
    momentum 0.9 over the global batch; teacher EMA 0.996 -> 1 (cosine, per step); AdamW, LR 5e-4 x B/256,
    10 warm-up epochs, cosine to ``min_lr``; weight decay cosine 0.04 -> 0.4 per step (none on biases and
    norms); gradients clipped to norm 3.0 *per parameter* (``utils.clip_gradients``, not the global norm);
    stochastic depth 0.1 in the student only; multi-crop: 2 global crops + local crops, the teacher sees
    the global ones, the loss covers every (teacher global q, student crop v != q) pair.

    State on the module: the teacher (``teacher_backbone``, ``teacher_head``) and the ``center`` (a
    persistent buffer, checkpointed). Update rules: :class:`MomentumUpdate`, :class:`CenterUpdate`,
    :class:`FreezeLastLayer`, :class:`WeightDecaySchedule`, returned by :meth:`configure_callbacks`.
    Logs ``train/loss``, ``train/teacher_temp``, ``train/teacher_entropy`` (mean entropy of the centred,
    sharpened teacher distribution, nats) and ``train/kl`` (the mean KL(P_t || P_s) over the loss's pairs
    = loss - teacher entropy: the two signals of the paper's collapse study, Sec. 5.3 / Fig. 7).

    Deviations: the teacher-temperature schedule and the frozen last layer count epochs of the trainer,
    as the official code; the center is updated once per optimizer step from the sums of all micro-batches
    (the official code has no gradient accumulation, so the two agree without it). With a ViT, local crops
    need ``backbone.dynamic_img_size=true`` (our ViT resamples its fixed sin-cos position embedding where
    the official one interpolates a learned one).

    Args:
        out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer: the head (:class:`DINOHead`).
        head_bn: BatchNorm after the head's hidden layers (the official ``--use_bn_in_head``, default false).
        student_temp: tau_s > 0.
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: the teacher-temperature schedule.
        center_momentum: m in [0, 1).
        base_tau, final_tau: teacher EMA momentum, cosine per step.
        weight_decay_end: final weight decay of the cosine schedule (its start is ``optimizer.weight_decay``).
        freeze_last_layer_epochs: epochs with a frozen last layer.
        clip_grad: per-parameter gradient-norm clipping; 0 disables it (``trainer.gradient_clip_val``, when
            set, wins and clips the global norm).
        num_global_crops: the leading views the teacher sees (2).
    """

    num_views = None  # any multi-crop configuration that check_views accepts
    min_batch_size = 1

    def __init__(self, backbone, optimizer, scheduler=None, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, head_layers: int = 3, norm_last_layer: bool = True, head_bn: bool = False,
                 student_temp: float = 0.1, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
                 warmup_teacher_temp_epochs: int = 30, center_momentum: float = 0.9, base_tau: float = 0.996,
                 final_tau: float = 1.0, weight_decay_end: float = 0.4, freeze_last_layer_epochs: int = 1,
                 clip_grad: float = 3.0, num_global_crops: int = 2, lr_scaling: str = "linear",
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        for key, value in (("student_temp", student_temp), ("warmup_teacher_temp", warmup_teacher_temp),
                           ("teacher_temp", teacher_temp)):
            check(_is_number(value) and value > 0, f"method.{key}", value, "a temperature > 0")
        check(_is_int(warmup_teacher_temp_epochs) and warmup_teacher_temp_epochs >= 0,
              "method.warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, "an integer >= 0")
        check(_is_number(center_momentum) and 0 <= center_momentum < 1, "method.center_momentum", center_momentum,
              "a momentum in [0, 1)")
        for key, value in (("out_dim", out_dim), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim)):
            check(_is_int(value) and value >= 1, f"method.{key}", value, "an integer >= 1")
        check(_is_int(head_layers) and head_layers >= 1, "method.head_layers", head_layers, "an integer >= 1")
        check(isinstance(head_bn, bool), "method.head_bn", head_bn, "true or false")
        check(_is_number(clip_grad) and clip_grad >= 0, "method.clip_grad", clip_grad, "a gradient norm >= 0 (0: no clipping)")
        check(_is_int(num_global_crops) and num_global_crops >= 1, "method.num_global_crops", num_global_crops,
              "an integer >= 1")
        self.student_temp, self.warmup_teacher_temp, self.final_teacher_temp = student_temp, warmup_teacher_temp, teacher_temp
        self.warmup_teacher_temp_epochs, self.center_momentum = warmup_teacher_temp_epochs, center_momentum
        self.clip_grad, self.num_global_crops = clip_grad, num_global_crops
        self.momentum_update = MomentumUpdate(base_tau, final_tau)
        weight_decay = getattr(optimizer, "keywords", {}).get("weight_decay", 0.0)
        self.weight_decay_schedule = WeightDecaySchedule(weight_decay, weight_decay_end)
        self.freeze_last_layer = FreezeLastLayer(freeze_last_layer_epochs)
        self.center_update = CenterUpdate()
        self.head = DINOHead(backbone.num_features, out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer,
                             use_bn=head_bn)
        self.teacher_backbone = without_drop_path(frozen_copy(backbone))
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(out_dim))
        # per-step sums of the teacher outputs and their count, all-reduced once per optimizer step
        self.register_buffer("center_sums", torch.zeros(out_dim + 1), persistent=False)

    # -- configuration checks ----------------------------------------------------------------------------

    def check_views(self, view_sizes: Sequence[int]) -> None:
        """Fail before training on crops DINO cannot use (called by train.py)."""
        sizes, g = list(view_sizes), self.num_global_crops
        check(len(sizes) >= max(2, g), "augment.views", f"{len(sizes)} views",
              f"at least 2 crops, the first method.num_global_crops={g} of them global")
        check(len(set(sizes[:g])) == 1 and sizes[0] == max(sizes), "augment.views", f"crops of {sizes} px",
              f"the {g} global crops first, all of the largest size")
        patch = getattr(self.backbone, "patch_size", None)
        check(patch is None or min(sizes) >= patch, "augment.views", f"crops of {sorted(set(sizes))} px",
              f"crops of at least the patch size {patch} px")
        fixed = getattr(self.backbone, "image_size", None)
        dynamic = getattr(self.backbone, "dynamic_img_size", False)
        check(fixed is None or dynamic or all(s == fixed for s in sizes), "augment.views",
              f"crops of {sorted(set(sizes))} px",
              f"crops of {fixed} px only: {type(self.backbone).__name__} takes one image size; set "
              "backbone.dynamic_img_size=true (e.g. backbone=vit_small_multicrop) for local crops, or drop them "
              "(augment.views=[{count: 2}])")

    def setup(self, stage: str) -> None:
        trainer = self._trainer
        if stage != "fit" or trainer is None or trainer.fast_dev_run or trainer.max_epochs in (None, -1):
            return
        check(self.warmup_teacher_temp_epochs <= trainer.max_epochs, "method.warmup_teacher_temp_epochs",
              self.warmup_teacher_temp_epochs, f"at most trainer.max_epochs={trainer.max_epochs}")
        warmup = getattr(self.scheduler_factory, "keywords", {}).get("warmup_epochs", 0)
        check(warmup <= trainer.max_epochs, "method.scheduler.warmup_epochs", warmup,
              f"at most trainer.max_epochs={trainer.max_epochs}")

    # -- state and update rules --------------------------------------------------------------------------

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def configure_callbacks(self):
        return [self.momentum_update, self.center_update, self.freeze_last_layer, self.weight_decay_schedule]

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return list(self.head.last_layer.parameters())

    def teacher_temp(self) -> float:
        return teacher_temperature(self.current_epoch, self.warmup_teacher_temp, self.final_teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def centers(self) -> list[torch.Tensor]:
        """The center buffers, in the order of :meth:`center_batch_sums`."""
        return [self.center]

    @torch.no_grad()
    def accumulate_center(self, *sums: torch.Tensor, count: int) -> None:
        """Add this micro-batch's sums of teacher outputs (one per center) and their row count (no sync)."""
        self.center_sums[:-1] += torch.cat(sums).to(self.center_sums.dtype)
        self.center_sums[-1] += count

    @torch.no_grad()
    def update_center(self) -> None:
        """One all-reduce of the step's sums over ranks, then the EMA of every center (:class:`CenterUpdate`)."""
        sums = self.center_sums.clone()
        if world_size() > 1:
            torch.distributed.all_reduce(sums)
        mean = sums[:-1] / sums[-1].clamp(min=1.0)
        for center, batch_center in zip(self.centers(), mean.split([c.numel() for c in self.centers()])):
            center.mul_(self.center_momentum).add_(batch_center.to(center.dtype), alpha=1 - self.center_momentum)
        self.reset_center_sums()

    @torch.no_grad()
    def reset_center_sums(self) -> None:
        self.center_sums.zero_()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
        elif self.clip_grad > 0:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            clip_grad_per_parameter_(grads, self.clip_grad)

    # -- training ----------------------------------------------------------------------------------------

    def forward_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features of all views, (V * B, F): one backbone call per run of same-size views
        (the official ``MultiCropWrapper``)."""
        return torch.cat([self.backbone(torch.cat(list(run))) for _, run in groupby(views, key=lambda v: v.shape[-2:])])

    def log_signals(self, loss: torch.Tensor, teacher: torch.Tensor, temp: float) -> None:
        """``train/teacher_entropy``, ``train/kl`` (= loss - teacher entropy) and ``train/teacher_temp``, on the
        steps a logger writes (:meth:`logs_this_step`; computed only then)."""
        if not self.logs_this_step():
            return
        with torch.no_grad():
            teacher_entropy = entropy(teacher)
        self.log_step("train/teacher_entropy", teacher_entropy)
        self.log_step("train/kl", loss.detach() - teacher_entropy)
        self.log_step("train/teacher_temp", host_scalar(temp))

    def training_step(self, batch, batch_idx: int):
        views, _ = batch
        g, n = self.num_global_crops, views[0].shape[0]
        if len(views) < max(2, g):
            raise ConfigError(f"method.num_global_crops={g} is not allowed: the batch has {len(views)} views")
        with torch.no_grad():
            t = self.teacher_head(self.teacher_backbone(torch.cat(list(views[:g]))))  # (G*B, K)
        h = self.forward_views(views)  # (V*B, F)
        b = self.head.bottleneck(h)  # (V*B, bottleneck)
        s = self.head.last_layer(b)  # (V*B, K)
        temp = self.teacher_temp()
        probs = teacher_probs(t, self.center, temp)  # (G*B, K)
        loss = dino_loss(s.split(n), probs.split(n), self.student_temp)
        self.accumulate_center(t.float().sum(dim=0), count=t.shape[0])  # fp32 sums, whatever the precision
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_signals(loss, probs, temp)
        self.log_lr()
        return {"loss": loss, "h": h[:n].detach(), "z": b[:n].detach()}


@torch.no_grad()
def clip_grad_per_parameter_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale each gradient whose L2 norm exceeds ``max_norm`` to norm ``max_norm`` (the official
    ``utils.clip_gradients``: ``clip_coef = max_norm / (norm + 1e-6)`` applied when below 1), fused and
    without a host synchronisation."""
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    torch._foreach_mul_(grads, [torch.clamp(max_norm / (norm + 1e-6), max=1.0) for norm in norms])


def without_drop_path(module: nn.Module) -> nn.Module:
    """Disable stochastic depth in a teacher copy (the official teacher is built without ``drop_path_rate``):
    our ViT blocks' ``drop_path`` rate and timm's ``DropPath.drop_prob``."""
    for m in module.modules():
        if isinstance(getattr(m, "drop_path", None), float):
            m.drop_path = 0.0
        if isinstance(getattr(m, "drop_prob", None), float):
            m.drop_prob = 0.0
    return module


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
