"""SwAV: Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (Caron et al., 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks import QueueUpdate, ring_enqueue_
from ssl_lightning.config import ConfigError, check
from ssl_lightning.distributed import gather_no_grad, rank
from ssl_lightning.heads import MLP
from ssl_lightning.losses import sinkhorn_knopp, swav_loss
from ssl_lightning.methods.base import SSLMethod


class SwAV(SSLMethod):
    """Online clustering with swapped prediction (Sec. 3): the code of each global crop, an equipartitioned
    soft assignment of the batch to K prototypes by Sinkhorn-Knopp, is predicted from every other crop.

    Paper defaults (Sec. 4, Appendix A, and the reference scripts for batch 4096): projector 2048-128 (BN,
    ReLU) followed by L2-normalisation; K = 3000 prototypes, a bias-free linear layer whose rows are
    L2-normalised after every optimizer step and which is frozen during the first epoch; Sinkhorn-Knopp with
    epsilon 0.05 and 3 iterations in fp32 over the global batch; temperature 0.1; multi-crop with 2 global
    crops (scale 0.14-1) and 6 local crops (scale 0.05-0.14, 96/224 of the size); LARS with LR 4.8 for
    batch 4096 (0.3 x B/256), weight decay 1e-6, 10 warmup epochs from 0.3 (``--start_warmup``), cosine to
    0.001 x LR.

    Optimizer as the official ``main_swav.py``: apex ``LARC(SGD, trust_coefficient=0.001, clip=False)`` over
    ``model.parameters()``, so layer adaptation and weight decay apply to every parameter, BN and biases
    included (``lars_all_params=true``; false: the usual exclusion of biases and norms). Remaining
    deviations: LARC's trust ratio is ``eta ||w|| / (||g|| + wd ||w||)``, ours ``eta ||w|| / ||g + wd w||``
    (equal when g and w are orthogonal; otherwise a slightly different step size); the reference uses apex
    mixed precision (``--use_fp16``), here ``trainer.precision``; ``freeze_prototypes_epochs`` counts epochs
    where the scripts count iterations (313 at batch 4096 = 1 epoch).

    Views are grouped by resolution: consecutive views of one size go through the backbone in one batch
    (the reference multi-resolution forward). Codes are computed for ``crops_for_assign`` (the two global
    crops) from the projections of the whole global batch, gathered from every rank, so the equipartition
    constraint holds over the global batch exactly as in the reference distributed Sinkhorn.

    Optional queue (small batches; the paper's batch-256 setting uses 3840 and starts at epoch 15): the
    projections of the last ``queue_length`` global-batch samples of each assigned crop, a persistent
    buffer, filled from epoch ``queue_start_epoch`` on by :class:`QueueUpdate` after each optimizer step and
    used, once full, only to compute codes (its rows join the Sinkhorn problem; they are not predicted).

    Args:
        num_prototypes: K.
        temperature: softmax temperature of the prediction, > 0.
        epsilon: Sinkhorn entropy regularisation, > 0.
        sinkhorn_iterations: >= 1.
        crops_for_assign: indices of the views whose codes are computed (global crops).
        freeze_prototypes_epochs: epochs during which the prototypes get no update.
        queue_length: 0 (no queue) or the number of queued projections per assigned crop.
        queue_start_epoch: first epoch that fills the queue.
        lars_all_params: LARS adaptation and weight decay on every parameter (the official LARC).
    """

    min_batch_size = 2
    num_views = None  # any multi-crop configuration that :meth:`check_views` accepts

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 2048, proj_output_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, crops_for_assign: Sequence[int] = (0, 1),
                 freeze_prototypes_epochs: int = 1, queue_length: int = 0, queue_start_epoch: int = 15,
                 lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False,
                 lars_all_params: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(lars_all_params, bool), "method.lars_all_params", lars_all_params, "true or false")
        self.lars_all_params = lars_all_params
        crops_for_assign = list(crops_for_assign)
        check(isinstance(temperature, (int, float)) and temperature > 0, "method.temperature", temperature, "a float > 0")
        check(isinstance(epsilon, (int, float)) and epsilon > 0, "method.epsilon", epsilon, "a float > 0 (0.05 in the paper)")
        check(_is_int(sinkhorn_iterations) and sinkhorn_iterations >= 1, "method.sinkhorn_iterations",
              sinkhorn_iterations, "an integer >= 1")
        check(_is_int(num_prototypes) and num_prototypes >= 1, "method.num_prototypes", num_prototypes, "an integer >= 1")
        check(len(crops_for_assign) >= 1 and all(_is_int(i) and i >= 0 for i in crops_for_assign)
              and len(set(crops_for_assign)) == len(crops_for_assign), "method.crops_for_assign", crops_for_assign,
              "distinct indices >= 0 of the global crops, e.g. [0, 1]")
        check(_is_int(freeze_prototypes_epochs) and freeze_prototypes_epochs >= 0, "method.freeze_prototypes_epochs",
              freeze_prototypes_epochs, "an integer >= 0")
        check(_is_int(queue_length) and queue_length >= 0, "method.queue_length", queue_length,
              "an integer >= 0 (0: no queue)")
        check(_is_int(queue_start_epoch) and queue_start_epoch >= 0, "method.queue_start_epoch", queue_start_epoch,
              "an integer >= 0")
        self.temperature, self.epsilon, self.sinkhorn_iterations = temperature, epsilon, sinkhorn_iterations
        self.crops_for_assign = crops_for_assign
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.queue_length, self.queue_start_epoch = queue_length, queue_start_epoch
        self.queue_update = QueueUpdate()
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_output_dim])
        self.prototypes = nn.Linear(proj_output_dim, num_prototypes, bias=False)
        self.normalize_prototypes()
        # (L, A, D): the last L projections of each of the A assigned crops; `queue_filled` counts valid rows
        self.register_buffer("queue", torch.zeros(queue_length, len(crops_for_assign), proj_output_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        # the same count on the host, so the step decides "is the queue full?" without reading the device;
        # kept by enqueue() and refreshed whenever a state dict (a checkpoint) is loaded
        self.queue_rows = 0
        self.register_load_state_dict_post_hook(lambda module, keys: module.count_queue_rows())

    def check_views(self, view_sizes: Sequence[int]) -> None:
        """Fail before training on a crop configuration SwAV cannot use (called by train.py)."""
        sizes = list(view_sizes)
        check(len(sizes) >= 2, "augment.views", f"{len(sizes)} view", "at least 2 crops for SwAV's swapped prediction")
        check(max(self.crops_for_assign) < len(sizes), "method.crops_for_assign", self.crops_for_assign,
              f"indices of the augmentation's {len(sizes)} views")
        global_size = max(sizes)
        check(all(sizes[i] == global_size for i in self.crops_for_assign), "method.crops_for_assign",
              self.crops_for_assign, f"indices of global crops (the largest, {global_size} px; the view sizes are {sizes})")
        fixed = getattr(self.backbone, "image_size", None)  # e.g. our ViT: one input size only
        check(fixed is None or all(size == fixed for size in sizes), "augment.views", f"crops of {sorted(set(sizes))} px",
              f"crops of {fixed} px only: {type(self.backbone).__name__} takes one image size (drop the local crops, "
              "e.g. augment.views=[{count: 2}])")

    def configure_callbacks(self):
        return [self.queue_update]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """``lars_all_params``: one group, decayed and LARS-adapted, as the official LARC over every parameter."""
        if not self.lars_all_params:
            return super().parameter_groups(weight_decay)
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Called by :class:`QueueUpdate` after the optimizer step with (N, A, D) projections."""
        ring_enqueue_(self.queue, self.queue_ptr, z, self.queue_filled)
        self.queue_rows = min(self.queue_length, self.queue_rows + z.shape[0])

    def count_queue_rows(self) -> None:
        """Read the queue's fill count from the device (after loading a state dict, outside any step)."""
        self.queue_rows = int(self.queue_filled)

    def forward_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features of all views, (V * B, F): one backbone call per run of same-size views."""
        return torch.cat([self.backbone(torch.cat(list(run))) for _, run in groupby(views, key=lambda v: v.shape[-2:])])

    @torch.no_grad()
    def codes(self, z: torch.Tensor, crop: int, slot: int) -> torch.Tensor:
        """Codes (B, K) of this rank's samples of one assigned crop: Sinkhorn over the global batch (and
        the queue, once full) in fp32, keeping this rank's rows. ``z``: this crop's projections (B, D)."""
        z_all = gather_no_grad(z.float())  # (W*B, D)
        start = rank() * z.shape[0]
        if self.queue_length and self.queue_rows >= self.queue_length:  # host-side count: no sync
            z_all = torch.cat([self.queue[:, slot].float(), z_all])
            start += self.queue_length
        with torch.autocast(device_type=z.device.type, enabled=False):
            scores = z_all @ self.prototypes.weight.float().T  # (N, K)
        q = sinkhorn_knopp(scores, self.epsilon, self.sinkhorn_iterations)
        return q[start : start + z.shape[0]]

    def training_step(self, batch, batch_idx: int):
        views, _ = batch
        if len(views) <= max(self.crops_for_assign):
            raise ConfigError(f"method.crops_for_assign={self.crops_for_assign} is not allowed: indices of the "
                              f"batch's {len(views)} views")
        n = views[0].shape[0]
        h = self.forward_views(views)  # (V*B, F)
        z = F.normalize(self.projector(h), dim=1)  # (V*B, D)
        with torch.autocast(device_type=z.device.type, enabled=False):
            scores = z.float() @ self.prototypes.weight.float().T  # (V*B, K), fp32 whatever the weights' dtype
        z_crops = z.detach().split(n)
        codes = [self.codes(z_crops[c], c, slot) for slot, c in enumerate(self.crops_for_assign)]
        loss = swav_loss(scores.split(n), codes, self.crops_for_assign, self.temperature)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        out = {"loss": loss, "h": h[:n].detach(), "z": z[:n].detach()}
        if self.queue_length and self.current_epoch >= self.queue_start_epoch:
            out["enqueue"] = gather_no_grad(torch.stack([z_crops[c] for c in self.crops_for_assign], dim=1))  # (W*B, A, D)
        return out

    def on_before_optimizer_step(self, optimizer) -> None:
        """The prototypes are frozen during the first ``freeze_prototypes_epochs`` epochs (reference code:
        their gradients are dropped, so neither the update nor the weight decay touches them)."""
        if self.current_epoch < self.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Keep the prototypes on the unit sphere after every step (idempotent on accumulation micro-steps)."""
        self.normalize_prototypes()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
