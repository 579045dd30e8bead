"""I-JEPA's multi-block masks (Assran et al., 2023, Sec. 3 and Fig. 4), drawn per batch in the loader's collate.

For each image, M = 4 *target* blocks (scale 0.15-0.2 of the image, aspect ratio 0.75-1.5) and one *context*
block (scale 0.85-1.0, aspect ratio 1) from which the target blocks are removed; the context encoder sees the
context patches, the predictor predicts the target encoder's representations of each target block.

Follows the official collator (facebookresearch/ijepa, ``src/masks/multiblock.py``, ``MaskCollator``, with
``configs/in1k_vith14_ep300.yaml``: ``pred_mask_scale [0.15, 0.2]``, ``enc_mask_scale [0.85, 1.0]``,
``aspect_ratio [0.75, 1.5]``, ``num_pred_masks 4``, ``num_enc_masks 1``, ``min_keep 10``,
``allow_overlap false``):

- one target block size and one context block size per *batch*, so every target block of the batch has the
  same number of patches; the scale and the aspect ratio of a block come from the *same* uniform draw u
  (``_sample_block_size``: ``scale = lo + u (hi - lo)``, ``aspect = lo + u (hi - lo)``), the number of patches
  is ``int(N x scale)``, the sides ``round(sqrt(n x aspect))`` x ``round(sqrt(n / aspect))``, each capped at
  the grid side minus one;
- a block is redrawn until it keeps more than ``min_keep`` patches; the context block is constrained to lie
  outside the image's target blocks, and after 20 failed draws one more target block (the last first) stops
  constraining it, so on crowded grids the context may overlap a target (the official behaviour, logged);
- the context index lists of a batch are cut to the shortest one (keeping the first patches in raster
  order), so the batch carries fixed-size index tensors and the training step has no data-dependent shapes.

Deviation: a block's top-left corner is uniform over *every* position where it fits. The official
``torch.randint(0, height - h)`` excludes the last one, so no block there ever covers the last patch row or
column (with a 16x16 grid the context block always starts at row 0, column 0).

Randomness: each sample draws a 63-bit key inside the seeded per-sample transform (a function of (seed, epoch,
index), like every augmentation here); the batch's masks come from a generator seeded with the first
sample's key, so they are the same for any number of loader workers and after a resume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch.utils.data import default_collate

from ssl_lightning.config import check
from ssl_lightning.transforms.masking import MaskedImageTransform

log = logging.getLogger(__name__)

RETRIES = 20  # official: draws before one constraint is relaxed


def _check_range(value, key: str, low: float, high: float, what: str) -> tuple[float, float]:
    ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    ok = ok and low < value[0] <= value[1] <= high
    check(ok, key, list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value,
          f"[min, max] with {low} < min <= max <= {high} ({what})")
    return float(value[0]), float(value[1])


class MultiBlockMasking:
    """Draws a batch's context and target patch indices (see the module docstring).

    Args:
        num_targets: target blocks per image, M (4).
        target_scale: [min, max] fraction of the patches in one target block (0.15, 0.2).
        target_aspect: [min, max] height / width of a target block (0.75, 1.5).
        context_scale: [min, max] fraction of the patches in the context block before the targets are
            removed (0.85, 1.0); the context block is square.
        min_keep: every block keeps more than this many patches (official: 10, on a 16x16 grid); ``None``
            scales 10/256 of the grid (2 on an 8x8 grid), as 10 patches would be most of a small grid's block.
    """

    def __init__(self, num_targets: int = 4, target_scale: Sequence[float] = (0.15, 0.2),
                 target_aspect: Sequence[float] = (0.75, 1.5), context_scale: Sequence[float] = (0.85, 1.0),
                 min_keep: int | None = 10):
        check(isinstance(num_targets, int) and num_targets >= 1, "augment.masking.num_targets", num_targets,
              "an integer >= 1")
        check(min_keep is None or (isinstance(min_keep, int) and min_keep >= 0), "augment.masking.min_keep", min_keep,
              "an integer >= 0, or null to scale 10/256 of the grid")
        self.num_targets, self.min_keep = num_targets, min_keep
        self.target_scale = _check_range(target_scale, "augment.masking.target_scale", 0, 1, "fractions of the image")
        self.target_aspect = _check_range(target_aspect, "augment.masking.target_aspect", 0, math.inf,
                                          "height/width ratios")
        self.context_scale = _check_range(context_scale, "augment.masking.context_scale", 0, 1, "fractions of the image")
        self.relaxed = 0  # context blocks drawn with a relaxed constraint (overlapping a target), in this process

    def keep(self, height: int, width: int) -> int:
        """The ``min_keep`` of a height x width grid."""
        return self.min_keep if self.min_keep is not None else int(10 * height * width / 256)

    @staticmethod
    def block_size(u: float, scale: tuple[float, float], aspect: tuple[float, float], height: int,
                   width: int) -> tuple[int, int]:
        """(h, w) of a block from one uniform draw ``u`` (official ``_sample_block_size``)."""
        n = int(height * width * (scale[0] + u * (scale[1] - scale[0])))
        ratio = aspect[0] + u * (aspect[1] - aspect[0])
        h, w = int(round(math.sqrt(n * ratio))), int(round(math.sqrt(n / ratio)))
        return min(h, height - 1), min(w, width - 1)

    def validate(self, height: int, width: int) -> None:
        """Every target and context block size the ranges can give must fit the grid with more than
        ``min_keep`` patches (otherwise the official sampler loops for ever)."""
        grid, keep = f"the {height}x{width} patch grid", self.keep(height, width)
        us = [i / 200 for i in range(201)]
        targets = [self.block_size(u, self.target_scale, self.target_aspect, height, width) for u in us]
        smallest = min(h * w for h, w in targets)
        check(smallest > keep, "augment.masking.target_scale", list(self.target_scale),
              f"target blocks that fit {grid} with more than min_keep={keep} patches; the smallest is "
              f"{min(targets, key=lambda s: s[0] * s[1])} = {smallest} patches (raise the scale, lower "
              "augment.masking.min_keep, or use a finer grid: smaller backbone.patch_size or larger data.image_size)")
        contexts = [self.block_size(u, self.context_scale, (1.0, 1.0), height, width) for u in us]
        smallest = min(h * w for h, w in contexts)
        check(smallest > keep, "augment.masking.context_scale", list(self.context_scale),
              f"a context block that fits {grid} with more than min_keep={keep} patches; the smallest is "
              f"{smallest} patches")

    def _place(self, h: int, w: int, height: int, width: int, generator: torch.Generator,
               exclude: list[torch.Tensor] | None = None) -> torch.Tensor:
        """A (height, width) bool block mask with more than ``min_keep`` patches outside ``exclude``."""
        relaxed, failures, keep = 0, 0, self.keep(height, width)
        while True:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            mask = torch.zeros(height, width, dtype=torch.bool)
            mask[top : top + h, left : left + w] = True
            for region in (exclude or [])[: max(len(exclude or []) - relaxed, 0)]:
                mask &= ~region
            if int(mask.sum()) > keep:
                if relaxed:
                    self.relaxed += 1
                    log.warning("multi-block masking: no context block with more than %d patches outside the "
                                "%d target blocks in %d draws; it may overlap %d of them (%d so far)",
                                keep, len(exclude or []), RETRIES * relaxed, relaxed, self.relaxed)
                return mask
            failures += 1
            if failures % RETRIES == 0:
                relaxed += 1

    def __call__(self, batch_size: int, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``context_ids`` (B, Nc) and ``target_ids`` (B, M, Nt): row-major patch indices, sorted, int64."""
        g = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        th, tw = self.block_size(float(torch.rand((), generator=g)), self.target_scale, self.target_aspect, height, width)
        ch, cw = self.block_size(float(torch.rand((), generator=g)), self.context_scale, (1.0, 1.0), height, width)
        contexts, targets = [], []
        for _ in range(batch_size):
            blocks = [self._place(th, tw, height, width, g) for _ in range(self.num_targets)]
            context = self._place(ch, cw, height, width, g, exclude=blocks)
            targets.append(torch.stack([b.flatten().nonzero().squeeze(1) for b in blocks]))  # (M, Nt)
            contexts.append(context.flatten().nonzero().squeeze(1))
        keep = min(len(c) for c in contexts)
        return torch.stack([c[:keep] for c in contexts]), torch.stack(targets)


class MultiBlockTransform(MaskedImageTransform):
    """PIL image -> ``(view, key)``; :meth:`collate` turns the samples into ``((images (B, 3, H, W),
    context_ids (B, Nc), target_ids (B, M, Nt)), labels)`` with the batch's multi-block masks.

    The view is made by the shared view pipeline; I-JEPA uses the random resized crop only (official
    ``make_transforms`` with ``crop_scale (0.3, 1.0)``, no flip, colour jitter or blur). The datamodule uses
    ``collate`` as the training loader's ``collate_fn``, so the masks are drawn in the loader workers.

    Args:
        masking: a :class:`MultiBlockMasking`.
        patch_size, size, mean, std, data_overrides, **view: as for :class:`MaskedImageTransform`.
    """

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pipeline(image), torch.randint(2**62, ())

    def collate(self, samples) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        (images, keys), labels = default_collate(samples)
        g = torch.Generator().manual_seed(int(keys[0]))
        context_ids, target_ids = self.masking(images.shape[0], self.grid, self.grid, g)
        return (images, context_ids, target_ids), labels
