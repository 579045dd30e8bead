"""Patch-mask generators for masked image modelling, and the transform that pairs an image with its mask.

Masks are drawn in the data pipeline, per sample, from torch's global RNG, so inside
:class:`~ssl_lightning.data.TransformedDataset` they are a function of (seed, epoch, index) like every other
augmentation: the same for any number of loader workers or ranks. A mask is a (N,) bool tensor over the
row-major patch grid, True where the patch is masked.

- :class:`RandomMasking`: MAE's per-sample random masking (He et al., 2022, Sec. 3): shuffle the patches by
  sorting uniform noise, keep the first N - M; exactly M = round(N x mask_ratio) patches are masked.
- :class:`BlockwiseMasking`: BEiT's blockwise masking (Bao et al., 2022, Algorithm 1): rectangles of at least
  ``min_num_patches`` patches with aspect ratio in [0.3, 1/0.3] are added until about 40% of the patches
  are masked.
- :class:`RandomRatioBlockwiseMasking`: iBOT's variant: a crop is masked with probability 0.5, at a ratio drawn
  from [0.1, 0.5]; :class:`MaskedMultiViewTransform` pairs multi-crop views with masks of the global crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from ssl_lightning.config import ConfigError, check
from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, data_view_overrides, view_pipeline


def check_mask_ratio(mask_ratio, key: str = "method.mask_ratio") -> None:
    ok = isinstance(mask_ratio, (int, float)) and not isinstance(mask_ratio, bool) and 0 < mask_ratio < 1
    check(ok, key, mask_ratio, "a fraction of patches strictly between 0 and 1")


def random_masking(batch: int, num_patches: int, num_masked: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's random masking by sorting noise, for ``batch`` samples at once.

    Returns ``ids_keep`` (B, N - M) (the visible patches, in shuffled order), ``ids_restore`` (B, N) (the
    inverse permutation: position of each patch in the shuffled order) and ``mask`` (B, N) bool (True =
    masked), with exactly M masked patches in every row.
    """
    noise = torch.rand(batch, num_patches, generator=generator, device=device)  # (B, N)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the first N - M are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, : num_patches - num_masked]
    mask = ids_restore >= num_patches - num_masked  # (B, N) True where the patch's rank is among the dropped
    return ids_keep, ids_restore, mask


def mask_to_ids(mask: torch.Tensor, num_masked: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids_keep`` (B, N - M) and ``ids_restore`` (B, N) of a batch of masks with M masked patches each.

    A stable sort puts the visible patches first (in grid order), then the masked ones: any order works,
    since the encoder adds position embeddings before gathering and the decoder un-shuffles with
    ``ids_restore``. The count is checked on the device without a host synchronisation.
    """
    torch._assert_async((mask.sum(dim=1) == num_masked).all(), "every sample must mask exactly num_masked patches")
    ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # (B, N): visible first
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, : mask.shape[1] - num_masked], ids_restore


class RandomMasking:
    """MAE (He et al., 2022, Sec. 3): mask a uniformly random subset of exactly round(N x mask_ratio)
    patches per sample (paper default 0.75), drawn by sorting noise."""

    def __init__(self, mask_ratio: float = 0.75):
        check_mask_ratio(mask_ratio)
        self.mask_ratio = float(mask_ratio)

    def num_masked(self, num_patches: int) -> int:
        return int(round(num_patches * self.mask_ratio))

    def validate(self, height: int, width: int) -> None:
        n, m = height * width, self.num_masked(height * width)
        check(0 < m < n, "method.mask_ratio", self.mask_ratio,
              f"a ratio that masks at least one and leaves at least one of the {n} patches ({height}x{width} grid); it masks {m}")

    def __call__(self, height: int, width: int) -> torch.Tensor:
        n = height * width
        return random_masking(1, n, self.num_masked(n))[2][0]


class BlockwiseMasking:
    """BEiT (Bao et al., 2022, Algorithm 1 and Appendix): add random rectangles to the mask until
    round(N x mask_ratio) patches are masked (paper: 40%, 75 of 196 for 224-px images and 16-px patches).

    Each rectangle has an area s ~ U(min_num_patches, remaining budget), an aspect ratio r with log r ~
    U(log min_aspect, log max_aspect), and sides round(sqrt(s r)) x round(sqrt(s / r)); it is placed
    uniformly at random and accepted if it adds between 1 and ``max_num_patches`` (and at most the remaining
    budget) new patches. Unlike the reference code, a rectangle whose rounded sides break the area or
    aspect constraint is redrawn, so every rectangle really has at least ``min_num_patches`` patches and
    an aspect ratio in [min_aspect, max_aspect]. The loop stops when 10 draws in a row add nothing, so the
    count is at most, and usually close to, the target.

    Args:
        mask_ratio: target fraction of masked patches (0.4).
        min_num_patches: smallest rectangle (16 on BEiT's 14x14 grid). ``None`` scales 16/196 of the grid
            (5 patches on an 8x8 grid, 1 on 4x4): 16 patches would be a quarter of a small image's grid.
        max_num_patches: largest number of new patches per rectangle (``None``: the whole budget).
        min_aspect: smallest height/width ratio (0.3); the largest is ``max_aspect`` (default 1/min_aspect).
    """

    def __init__(self, mask_ratio: float = 0.4, min_num_patches: int | None = 16, max_num_patches: int | None = None,
                 min_aspect: float = 0.3, max_aspect: float | None = None):
        check_mask_ratio(mask_ratio)
        check(min_num_patches is None or (isinstance(min_num_patches, int) and min_num_patches >= 1),
              "augment.masking.min_num_patches", min_num_patches, "an integer >= 1, or null to scale 16/196 of the grid")
        check(max_num_patches is None or (isinstance(max_num_patches, int) and max_num_patches >= 1),
              "augment.masking.max_num_patches", max_num_patches, "an integer >= 1, or null")
        max_aspect = 1.0 / min_aspect if max_aspect is None and min_aspect > 0 else max_aspect
        check(0 < min_aspect <= (max_aspect or 0), "augment.masking.min_aspect", min_aspect,
              f"a height/width ratio > 0 and <= max_aspect={max_aspect}")
        self.mask_ratio, self.min_num_patches, self.max_num_patches = float(mask_ratio), min_num_patches, max_num_patches
        self.min_aspect, self.max_aspect = float(min_aspect), float(max_aspect)
        self.log_aspect = (math.log(self.min_aspect), math.log(self.max_aspect))

    def num_masked(self, num_patches: int) -> int:
        return int(round(num_patches * self.mask_ratio))

    def min_block(self, num_patches: int) -> int:
        if self.min_num_patches is not None:
            return self.min_num_patches
        return max(1, int(round(16 * num_patches / 196)))

    def validate(self, height: int, width: int) -> None:
        n = height * width
        m, smallest = self.num_masked(n), self.min_block(n)
        check(m >= 1, "method.mask_ratio", self.mask_ratio, f"a ratio that masks at least one of the {n} patches")
        fits = any(h * w >= smallest and self.min_aspect <= h / w <= self.max_aspect
                   for h in range(1, height) for w in range(1, width))  # sides < grid, as in BEiT
        check(fits and smallest <= m, "augment.masking.min_num_patches", smallest,
              f"a block size that fits a {height}x{width} grid (sides < grid, aspect in "
              f"[{self.min_aspect:.3g}, {self.max_aspect:.3g}]) and the {m} patches to mask")

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * torch.rand(()).item()

    def _randint(self, high: int) -> int:  # in [0, high]
        return int(torch.randint(0, high + 1, ()).item())

    def _add_block(self, mask: torch.Tensor, budget: int, smallest: int, blocks: list) -> int:
        height, width = mask.shape
        for _ in range(10):
            area = self._uniform(smallest, max(smallest, budget))
            aspect = math.exp(self._uniform(*self.log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if not (1 <= h < height and 1 <= w < width and h * w >= smallest and self.min_aspect <= h / w <= self.max_aspect):
                continue
            top, left = self._randint(height - h), self._randint(width - w)
            new = h * w - int(mask[top : top + h, left : left + w].sum())
            if 0 < new <= budget:
                mask[top : top + h, left : left + w] = True
                blocks.append((top, left, h, w))
                return new
        return 0

    def sample(self, height: int, width: int) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
        """The (height, width) mask and its rectangles as (top, left, h, w)."""
        n = height * width
        target, smallest = self.num_masked(n), self.min_block(n)
        mask = torch.zeros(height, width, dtype=torch.bool)
        blocks: list[tuple[int, int, int, int]] = []
        count = 0
        while count < target:
            budget = target - count
            if self.max_num_patches is not None:
                budget = min(budget, self.max_num_patches)
            added = self._add_block(mask, budget, smallest, blocks)
            if added == 0:
                break
            count += added
        return mask, blocks

    def __call__(self, height: int, width: int) -> torch.Tensor:
        return self.sample(height, width)[0].flatten()


class MaskedImageTransform:
    """PIL image -> ``(image, mask)``: one augmented view (3, size, size) and its (N,) bool patch mask.

    Collated by the loader into training batches ``((images (B, 3, H, W), masks (B, N)), labels)``: labels
    stay last, as for the multi-view transforms. The view is made by the same pipeline as
    :class:`~ssl_lightning.transforms.MultiViewTransform` (MAE: random resized crop (0.2, 1) and flip only;
    BEiT: crop, flip and colour jitter), with the data's overrides applied last.

    Args:
        masking: a mask generator called as ``masking(grid_h, grid_w)`` (:class:`RandomMasking`,
            :class:`BlockwiseMasking`).
        patch_size: the ViT's patch size (``None`` when the backbone has no patches: a configuration error).
        size, mean, std, data_overrides, **view: as for ``MultiViewTransform`` (any :class:`ViewSpec` field).
    """

    num_views = 1

    def __init__(self, masking, patch_size: int | None, size: int = 32, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), data_overrides: dict | None = None, **view):
        if patch_size is None:
            raise ConfigError("masked image modelling needs a ViT backbone (e.g. backbone=vit_tiny_p2 or vit_tiny): "
                              "the chosen backbone has no patch_size")
        check(isinstance(patch_size, int) and patch_size > 0 and size % patch_size == 0, "backbone.patch_size", patch_size,
              f"a positive divisor of the image size {size} (data.image_size)")
        allowed = {"crop_scale", "hflip_prob", "jitter", "jitter_prob", "grayscale_prob", "blur_prob", "blur_sigma", "solarize_prob"}
        data_overrides = data_view_overrides(data_overrides, size)
        for source, values in (("augment", view), ("data.augment", data_overrides)):
            for key in values:
                check(key in allowed, f"{source}.{key}", values[key], f"one of the view settings {sorted(allowed)}")
        as_tuples = lambda d: {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in d.items()}  # noqa: E731
        spec = replace(ViewSpec(size=size, **as_tuples(view)), **as_tuples(data_overrides))
        self.spec, self.masking, self.patch_size = spec, masking, patch_size
        self.grid = size // patch_size
        masking.validate(self.grid, self.grid)
        self.mean, self.std = list(mean), list(std)
        self.pipeline = view_pipeline(spec, self.mean, self.std)

    @property
    def view_sizes(self) -> list[int]:
        return [self.spec.size]

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pipeline(image), self.masking(self.grid, self.grid)


class RandomRatioBlockwiseMasking(BlockwiseMasking):
    """iBOT's blockwise masking (Zhou et al., 2022, Sec. 4; bytedance/ibot ``loader.py``, ``ImageFolderMask``
    with the ViT-S/16 command's ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``): each crop is masked with
    probability ``mask_prob`` (0.5), then with a ratio drawn uniformly from ``mask_ratio_range`` ([0.1, 0.5]);
    the rectangles are BEiT's (aspect ratio in [0.3, 1/0.3]) with the official minimum area
    ``(min(H, W) // 3) ** 2`` (16 on a 14x14 grid, as BEiT; at least 1). An unmasked crop gets an all-False mask.

    Args:
        mask_ratio_range: [low, high] with 0 < low <= high < 1.
        mask_prob: probability that a crop is masked at all, in [0, 1].
        min_aspect, max_aspect: as for :class:`BlockwiseMasking`.
    """

    def __init__(self, mask_ratio_range: Sequence[float] = (0.1, 0.5), mask_prob: float = 0.5,
                 min_aspect: float = 0.3, max_aspect: float | None = None):
        bounds = list(mask_ratio_range) if isinstance(mask_ratio_range, Sequence) and not isinstance(mask_ratio_range, str) else None
        ok = (bounds is not None and len(bounds) == 2 and all(isinstance(r, (int, float)) and not isinstance(r, bool)
                                                              for r in bounds) and 0 < bounds[0] <= bounds[1] < 1)
        check(ok, "augment.masking.mask_ratio_range", bounds if bounds is not None else mask_ratio_range,
              "[low, high] with 0 < low <= high < 1")
        check(isinstance(mask_prob, (int, float)) and 0 <= mask_prob <= 1, "augment.masking.mask_prob", mask_prob,
              "a probability in [0, 1]")
        super().__init__(bounds[1], None, None, min_aspect, max_aspect)
        self.mask_ratio_range, self.mask_prob = (float(bounds[0]), float(bounds[1])), float(mask_prob)
        self._ratio, self._grid_min = self.mask_ratio, 1

    def num_masked(self, num_patches: int) -> int:
        return int(round(num_patches * self._ratio))

    def min_block(self, num_patches: int) -> int:
        return self._grid_min

    def validate(self, height: int, width: int) -> None:
        """The smallest ratio must mask at least one patch and the blocks must fit the grid."""
        self._grid_min = max(1, (min(height, width) // 3) ** 2)
        self._ratio = self.mask_ratio_range[0]
        check(self.num_masked(height * width) >= 1, "augment.masking.mask_ratio_range", list(self.mask_ratio_range),
              f"a range whose low end masks at least one of the {height * width} patches ({height}x{width} grid)")
        check(height >= 2 and width >= 2, "backbone.patch_size", f"a {height}x{width} patch grid",
              "a grid of at least 2x2 patches for blockwise masking")

    def sample(self, height: int, width: int) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
        self._grid_min = max(1, (min(height, width) // 3) ** 2)
        if torch.rand(()).item() >= self.mask_prob:
            return torch.zeros(height, width, dtype=torch.bool), []
        self._ratio = self._uniform(*self.mask_ratio_range)
        return super().sample(height, width)


class MaskedMultiViewTransform:
    """PIL image -> ``[view_1, ..., view_V, masks]``: multi-crop views (a
    :class:`~ssl_lightning.transforms.MultiViewTransform`) followed by a (G, N) bool tensor, the patch masks
    of the first G views (the global crops), one independent draw each (iBOT: the student sees masked
    global crops). Collated into ``([(B, 3, H, W) per view..., (B, G, N)], labels)``.

    Args:
        masking: a mask generator called as ``masking(grid_h, grid_w)``.
        patch_size: the ViT's patch size (``None`` when the backbone has no patches: a configuration error).
        num_masked_views: G, the leading views that get masks (2).
        **multiview: as for :class:`~ssl_lightning.transforms.MultiViewTransform`.
    """

    def __init__(self, masking, patch_size: int | None, num_masked_views: int = 2, **multiview):
        if patch_size is None:
            raise ConfigError("masked image modelling needs a ViT backbone (e.g. backbone=vit_small): "
                              "the chosen backbone has no patch_size")
        self.views = MultiViewTransform(**multiview)
        sizes = self.views.view_sizes
        check(isinstance(num_masked_views, int) and 1 <= num_masked_views <= len(sizes)
              and len(set(sizes[:num_masked_views])) == 1, "method.num_global_crops", num_masked_views,
              f"a number of leading views of one size, at most {len(sizes)} (the view sizes are {sizes})")
        size = sizes[0]
        check(isinstance(patch_size, int) and patch_size > 0 and size % patch_size == 0, "backbone.patch_size",
              patch_size, f"a positive divisor of the global crop size {size}")
        self.masking, self.patch_size, self.num_masked_views = masking, patch_size, num_masked_views
        self.grid = size // patch_size
        masking.validate(self.grid, self.grid)

    @property
    def view_sizes(self) -> list[int]:
        return self.views.view_sizes

    @property
    def num_views(self) -> int:
        return self.views.num_views

    def __call__(self, image) -> list[torch.Tensor]:
        views = self.views(image)
        masks = torch.stack([self.masking(self.grid, self.grid) for _ in range(self.num_masked_views)])  # (G, N)
        return [*views, masks]
