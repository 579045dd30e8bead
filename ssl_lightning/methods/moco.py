"""MoCo v2: Momentum Contrast (He et al., 2020) with the improvements of Chen, Fan, Girshick & He (2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.callbacks import MomentumUpdate, QueueUpdate, frozen_copy, ring_enqueue_
from ssl_lightning.config import check
from ssl_lightning.distributed import gather_no_grad, rank, world_size
from ssl_lightning.heads import MLP
from ssl_lightning.losses import moco_loss
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.nn import convert_split_batchnorm, split_forward


class MoCo(SSLMethod):
    """A query encoder (backbone + projector) is trained to pick the momentum key encoder's key of the other
    view of its image among a queue of K keys of previous batches (He et al., 2020, Sec. 3 and Algorithm 1).

    Paper defaults (MoCo v2, Chen et al., 2020, Sec. 3 "Improved baselines"): 2-layer MLP head 2048-128
    with ReLU and no BN; temperature 0.2; queue K = 65536 of L2-normalised keys; key encoder = EMA of the
    query encoder with a constant momentum 0.999 (0.99 for CIFAR-scale runs); SGD with LR 0.03 x B/256,
    momentum 0.9, weight decay 1e-4 on every parameter (the reference code), cosine schedule, 200 epochs;
    augmentation "aug+" (crop 0.2-1, jitter 0.4/0.4/0.4/0.1, grey 0.2, blur 0.5, flip).

    State on the module: the key encoder (``key_backbone``, ``key_projector``, updated by
    :class:`MomentumUpdate`) and the queue, a persistent (K, D) buffer with a persistent pointer, updated by
    :class:`QueueUpdate` after each optimizer step with the keys of the global batch (gathered from every
    rank), so it survives checkpoint and resume and is the same on every rank. The queue starts empty and
    holds "the most recent keys", up to K (Sec. 3.2): rows not yet written are not negatives (``queue_filled``,
    also persistent). The reference code instead starts from K random unit vectors, and those are harmful
    negatives: at the first steps every query's positive key is far more similar to it than any random
    vector, and the fastest way down the loss is to map every image to the keys' common direction; on the
    digits the projections collapse within 3 steps (mean pairwise cosine 0.996) and stay collapsed once the
    queue holds the collapsed keys (the loss sits at log(K + 1)). Starting empty, every negative is a real key.

    Args:
        temperature: T of InfoNCE, > 0.
        queue_size: K, the number of negative keys, >= 1 (need not be a multiple of the batch).
        tau: the key encoder's constant EMA momentum, in [0, 1].
        symmetric: also use the second view as query against the first view's key (the loss is the sum of
            the two InfoNCE terms, as in the authors' CIFAR-10 demo); the keys of both views are enqueued,
            each once.
        proj_hidden_dim, proj_output_dim: projector widths (the head has no BN, as in MoCo v2).
        shuffle_bn: Shuffle-BN (Sec. 3.3): the key encoder sees the global batch shuffled across ranks, so
            a query and its positive key never share BatchNorm statistics (the leak the paper guards
            against); the keys are unshuffled afterwards. Excludes ``sync_batchnorm`` (global statistics would
            make the shuffle pointless).
        bn_splits: on a single device, Shuffle-BN is emulated as in the authors' CIFAR-10 demo (SplitBatchNorm,
            8 splits): the backbone's BatchNorm statistics are taken over ``bn_splits`` groups of the batch
            (sample n in group n % bn_splits), the queries' groups in batch order and the keys' groups of a
            shuffled batch, so a query and its key never share statistics (the paper's "cheating" through BN).
            One backbone call per view (:class:`~ssl_lightning.nn.SplitBatchNorm2d`), the running statistics
            moving once per call as in the authors' code. 1 turns it off; with several devices the devices
            are the groups.
    """

    min_batch_size = 2
    num_views = 2

    def __init__(self, backbone, optimizer, scheduler=None, proj_hidden_dim: int = 2048, proj_output_dim: int = 128,
                 temperature: float = 0.2, queue_size: int = 65536, tau: float = 0.999, symmetric: bool = False,
                 shuffle_bn: bool = False, bn_splits: int = 1, lr_scaling: str = "linear", compile: bool = False,
                 sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(not (shuffle_bn and sync_batchnorm), "method.shuffle_bn", shuffle_bn,
              "false with method.sync_batchnorm=true (choose one: Shuffle-BN as in the paper, or SyncBN)")
        check(isinstance(temperature, (int, float)) and temperature > 0, "method.temperature", temperature, "a float > 0")
        check(isinstance(queue_size, int) and not isinstance(queue_size, bool) and queue_size >= 1, "method.queue_size",
              queue_size, "an integer >= 1 (the number of negative keys; 65536 in the paper)")
        check(isinstance(tau, (int, float)) and 0.0 <= tau <= 1.0, "method.tau", tau, "a momentum in [0, 1]")
        check(isinstance(bn_splits, int) and not isinstance(bn_splits, bool) and bn_splits >= 1, "method.bn_splits",
              bn_splits, "an integer >= 1 (BatchNorm groups of the one-device Shuffle-BN; 1 turns it off)")
        self.temperature, self.symmetric, self.shuffle_bn = temperature, bool(symmetric), bool(shuffle_bn)
        self.bn_splits = bn_splits if shuffle_bn else 1
        self.min_batch_size = 2 * self.bn_splits  # every BatchNorm group needs 2 images
        self.momentum_update = MomentumUpdate(tau, tau)  # constant momentum
        self.queue_update = QueueUpdate()
        self.projector = MLP([backbone.num_features, proj_hidden_dim, proj_output_dim], norm=False)
        # one backbone call per view for the one-device Shuffle-BN (before the copy: the key encoder gets them too)
        self._split_in_one_call = convert_split_batchnorm(self.backbone) if self.bn_splits > 1 else True
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        self.register_buffer("queue", torch.zeros(queue_size, proj_output_dim))  # (K, D); rows [0, filled) hold keys
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def configure_callbacks(self):
        return [self.momentum_update, self.queue_update]

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """One group: the reference code decays every parameter, biases and BN included."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def shuffle_order(self, n: int, view: int, device: torch.device) -> torch.Tensor:
        """The Shuffle-BN permutation of ``n`` images for one view at this step: a function of (step, view), so
        a resumed run shuffles exactly as the uninterrupted one (the global RNG is not checkpointed). Drawn on
        ``device`` (no host tensor is copied in the step) and alike on every rank, so no broadcast is needed."""
        g = torch.Generator(device=device)
        g.manual_seed(2 * self.global_step + view)
        return torch.randperm(n, generator=g, device=device)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, view: int = 0) -> torch.Tensor:
        """The key encoder's forward, (B, 3, H, W) -> L2-normalised keys (B, D), with Shuffle-BN when enabled:
        the global batch is gathered, permuted by a permutation every rank draws alike (:meth:`shuffle_order`),
        each rank encodes its shard of the permuted batch, and the keys are gathered and put back in order."""
        if not self.shuffle_bn:
            return self.encode_keys(x)
        if world_size() == 1:
            perm = self.shuffle_order(x.shape[0], view, x.device)
            return self.encode_keys(x[perm], splits=self.bn_splits)[torch.argsort(perm)]
        x_all = gather_no_grad(x)  # (W*B, 3, H, W)
        perm = self.shuffle_order(x_all.shape[0], view, x.device)
        k_all = gather_no_grad(self.encode_keys(x_all[perm.view(world_size(), -1)[rank()]]))  # (W*B, D), permuted
        return k_all[torch.argsort(perm)].view(world_size(), x.shape[0], -1)[rank()]

    @torch.no_grad()
    def encode_keys(self, x: torch.Tensor, splits: int = 1) -> torch.Tensor:
        return F.normalize(self.key_projector(self.split_forward(self.key_backbone, x, splits)).float(), dim=1)

    def split_forward(self, backbone: nn.Module, x: torch.Tensor, splits: int) -> torch.Tensor:
        """``backbone(x)`` with BatchNorm statistics over ``splits`` groups of the batch (sample n in group
        n % splits), in one call."""
        return split_forward(backbone, x, splits, one_call=self._split_in_one_call)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Called by :class:`QueueUpdate` after the optimizer step with the keys of the global batch."""
        ring_enqueue_(self.queue, self.queue_ptr, keys, self.queue_filled)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint written before the queue started empty has no ``queue_filled``: its queue was full
        (random vectors, then keys), so every row counts."""
        state = checkpoint.get("state_dict", {})
        if "queue" in state and "queue_filled" not in state:
            state["queue_filled"] = torch.tensor(state["queue"].shape[0], dtype=torch.long)

    def training_step(self, batch, batch_idx: int):
        (x1, x2), _ = batch
        splits = self.bn_splits if world_size() == 1 else 1  # one-device Shuffle-BN: queries in batch-order groups
        h1 = self.split_forward(self.backbone, x1, splits)  # (B, F)
        q1 = self.projector(h1)  # (B, D)
        k2 = self.keys(x2)
        loss = moco_loss(q1, k2, self.queue, self.temperature, self.queue_filled)
        new_keys = gather_no_grad(k2)  # (W*B, D): every rank's keys, in rank order
        if self.symmetric:
            q2 = self.projector(self.split_forward(self.backbone, x2, splits))
            k1 = self.keys(x1, view=1)
            loss = loss + moco_loss(q2, k1, self.queue, self.temperature, self.queue_filled)
            # (2*W*B, D): each image's two keys, each enqueued once, in the order one process with the global
            # batch would enqueue them (all second-view keys, then all first-view keys)
            new_keys = torch.cat([new_keys, gather_no_grad(k1)])
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss, "h": h1.detach(), "z": q1.detach(), "enqueue": new_keys}
