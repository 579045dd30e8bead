"""Jigsaw: Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles (Noroozi & Favaro, 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ssl_lightning.config import ConfigError, check
from ssl_lightning.heads import MLP
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.transforms.jigsaw import JigsawTransform, shuffle_tiles
from ssl_lightning.transforms.permutations import hamming_permutations, mean_hamming_distance, min_hamming_distance


class Jigsaw(SSLMethod):
    """The context-free network (CFN, Sec. 3.1): a shared (siamese) encoder sees each of the n = grid^2
    tiles on its own; a per-tile fc layer, then the n tile features concatenated in puzzle order, feed a
    classifier over the permutation set (fc7 -> fc8 in the paper). The backbone is the tile encoder.

    Paper: 3x3 tiles, fc6 of 512 per tile (9 x 512 = 4608 -> fc7 4096 -> fc8 over the set), a set of up to
    1000 permutations chosen greedily for a large Hamming distance (Sec. 3.3, Table 3); tiles with random
    gaps, per-tile normalisation, colour jitter and grayscale against shortcuts (Sec. 3.2; done by
    :class:`~ssl_lightning.transforms.JigsawTransform`, ``augment=jigsaw``). Here the heads use BatchNorm
    (our MLP builder) where the paper's AlexNet used dropout. The schedule follows the PyTorch
    reimplementation of the paper (bbrattoli/JigsawPuzzlePytorch ``JigsawTrain.py``): SGD with momentum 0.9,
    weight decay 5e-4, batch 256, 70 epochs, LR divided by 10 every 20 epochs (``adjust_learning_rate(...,
    step=20, decay=0.1)``), and per-channel tile normalisation (:func:`~ssl_lightning.transforms.jigsaw.normalise_tiles`).
    Deviation, with its reason: the reimplementation's LR is ``--lr 0.001`` for its BatchNorm-free AlexNet
    with LRN and dropout (the paper's Caffe AlexNet: 0.01, 350k iterations); ours is 0.1 x B/256, the usual
    SGD LR of a ResNet with BatchNorm (He et al., 2016), 100x the reimplementation's.

    The permutation set is a persistent buffer, so it is saved in checkpoints; when training starts the
    method hands its copy to the data pipeline's transform (which builds the same set from the same config
    so that it also works on its own), so a resumed run solves exactly the puzzles it started with.

    Batches: ``({"tiles": (B, n, 3, t, t), "perm": (B,), "image": (B, 3, S, S)}, labels)``. The returned
    ``h`` is the backbone's features of the un-tiled augmented images, computed without gradients in eval
    mode (what validation and kNN see), for the online linear probe. Logs ``train/pretext_acc`` and
    ``val/pretext_acc`` (percent; chance is 100 / num_permutations), the latter on centred, un-jittered
    tiles of the validation images with a fixed permutation per image.

    Args:
        grid_size: tiles per side (>= 2).
        num_permutations: size of the permutation set, at most (grid_size^2)!.
        permutation_seed: seed of the greedy selection's first permutation (the set is a function of it).
        permutation_criterion: ``"min"`` maximise the minimum Hamming distance to the chosen set (ties by
            the average); ``"mean"`` the average only, as the paper's Algorithm 1.
        tile_dim: per-tile fc width (fc6); hidden_dim: fc7 width.
    """

    num_views = None  # the JigsawTransform is checked in setup()
    min_batch_size = 2

    def __init__(self, backbone, optimizer, scheduler=None, grid_size: int = 3, num_permutations: int = 100,
                 permutation_seed: int = 0, permutation_criterion: str = "min", tile_dim: int = 512,
                 hidden_dim: int = 4096, lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(tile_dim, int) and tile_dim > 0, "method.tile_dim", tile_dim, "a width > 0")
        check(isinstance(hidden_dim, int) and hidden_dim > 0, "method.hidden_dim", hidden_dim, "a width > 0")
        perms = hamming_permutations(num_permutations, grid_size, permutation_seed, permutation_criterion)
        self.register_buffer("permutations", perms)  # (P, n), persistent: saved with the checkpoint
        self.grid_size, self.num_tiles = grid_size, grid_size * grid_size
        self.tile_fc = nn.Sequential(nn.Linear(backbone.num_features, tile_dim, bias=False), nn.BatchNorm1d(tile_dim),
                                     nn.ReLU(inplace=True))  # fc6, shared by all tiles
        self.classifier = MLP([self.num_tiles * tile_dim, hidden_dim, num_permutations])  # fc7, fc8
        self.puzzle: JigsawTransform | None = None  # the data pipeline's transform, attached in setup()
        rank_zero_info(f"jigsaw: {num_permutations} permutations of {self.num_tiles} tiles, minimum Hamming distance "
                       f"{min_hamming_distance(perms)}, average {mean_hamming_distance(perms):.2f}")

    # -- the data pipeline -------------------------------------------------------------------------------

    def attach(self, transform) -> None:
        """Check that the training transform cuts this method's puzzles and remember it (for validation)."""
        if not isinstance(transform, JigsawTransform):
            raise ConfigError(f"augment={type(transform).__name__} is not allowed: method=jigsaw needs augment=jigsaw "
                              "(a JigsawTransform that cuts and shuffles tiles)")
        check(transform.grid_size == self.grid_size, "augment.grid_size", transform.grid_size,
              f"method.grid_size={self.grid_size}")
        check(transform.permutations.shape == self.permutations.shape, "augment.num_permutations",
              transform.permutations.shape[0], f"method.num_permutations={self.permutations.shape[0]}")
        side = getattr(self.backbone, "image_size", None)  # a ViT takes one input size only
        if side is not None:
            check(transform.tile_size == side, "augment.tile_size", transform.tile_size,
                  f"{side}, the ViT's input size (backbone.image_size): tiles are resized to it")
            check(transform.image_size == side, "data.image_size", transform.image_size,
                  f"{side}, the ViT's input size (backbone.image_size): kNN and linear evaluation encode full images")
        self.puzzle = transform

    def setup(self, stage: str) -> None:
        transform = getattr(self.trainer.datamodule, "train_transform", None) if self.trainer.datamodule else None
        if transform is not None:  # None: pre-made batches (benchmarks)
            self.attach(transform)

    def on_fit_start(self) -> None:
        """The checkpointed set is the source of truth: the loaders (created after this hook) use it."""
        if self.puzzle is not None:
            self.puzzle.permutations = self.permutations.detach().cpu().clone()

    # -- steps -------------------------------------------------------------------------------------------

    def classify(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tiles in puzzle order (B, n, 3, t, t) -> permutation logits (B, P)."""
        b, n = tiles.shape[:2]
        h = self.backbone(tiles.flatten(0, 1))  # (B n, F): every tile through the same encoder
        return self.classifier(self.tile_fc(h).reshape(b, -1))  # (B, n tile_dim) -> (B, P)

    def pretext_loss(self, tiles: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classify(tiles)
        loss = F.cross_entropy(logits.float(), perm)
        return loss, 100.0 * (logits.argmax(dim=1) == perm).float().mean()

    @torch.no_grad()
    def eval_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features in eval mode, as validation and kNN compute them (no BN statistics updated)."""
        was_training = self.backbone.training
        self.backbone.eval()
        h = self.backbone(images)
        self.backbone.train(was_training)
        return h

    def training_step(self, batch, batch_idx: int):
        x, _ = batch
        loss, acc = self.pretext_loss(x["tiles"], x["perm"])
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_step("train/pretext_acc", acc)
        self.log_lr()
        return {"loss": loss, "h": self.eval_features(x["image"])}

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        out = {"h": self(x), "y": y}
        if self.puzzle is None:  # no tile geometry known (pre-made batches): features only
            return out
        tiles = self.puzzle.clean_tiles(x)  # (B, n, 3, t, t), cells in order
        g = torch.Generator().manual_seed(batch_idx)  # the same puzzles at every validation
        perm = torch.randint(self.permutations.shape[0], (x.shape[0],), generator=g).to(x.device)
        loss, acc = self.pretext_loss(shuffle_tiles(tiles, self.permutations[perm]), perm)
        self.log("val/pretext_acc", acc, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.log("val/pretext_loss", loss, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        return out

    def on_train_start(self) -> None:
        for logger in self.loggers:  # the set's quality, next to the accuracies it explains
            logger.log_metrics({"train/permutation_min_hamming": float(min_hamming_distance(self.permutations.cpu()))}, step=0)
