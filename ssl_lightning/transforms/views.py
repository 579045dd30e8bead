"""Multi-view augmentation: N views of an image, each from its own augmentation pipeline.

The defaults are SimCLR's (Chen et al., 2020, Appendix A): random resized crop (scale 0.08-1), horizontal
flip, colour jitter (0.8, 0.8, 0.8, 0.2) (strength 1) with p=0.8, grayscale with p=0.2, Gaussian blur with sigma in
[0.1, 2] and a kernel of 10% of the crop size. Per-view settings give BYOL's asymmetric views (blur 1.0 /
0.1, solarize 0 / 0.2; Grill et al., 2020, Table 6) and SwAV's multi-crop (global + local crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from PIL import Image
from torchvision import transforms as T

from ssl_lightning.config import check


@dataclass(frozen=True)
class ViewSpec:
    """How one view is made. ``count`` identical-distribution views are drawn from this spec."""

    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip_prob: float = 0.5
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    count: int = 1

    def __post_init__(self) -> None:
        check(self.size >= 2, "augment.size", self.size, "an image side >= 2 pixels")
        lo, hi = self.crop_scale
        check(0 < lo <= hi <= 1, "augment.crop_scale", list(self.crop_scale), "[min, max] with 0 < min <= max <= 1")
        check(self.count >= 1, "augment.views[].count", self.count, "an integer >= 1")
        for name in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            check(0 <= value <= 1, f"augment.{name}", value, "a probability in [0, 1]")


def data_view_overrides(data_overrides: dict | None, size: int) -> dict:
    """The view settings the data imposes on images of side ``size`` (``data.augment``).

    ``min_blur_size: N`` is a rule on what the data *is*, not on its file format: below N pixels no view blurs
    (SimCLR, Appendix B.9: no Gaussian blur on 32-px CIFAR images; solo-learn's and lightly's CIFAR presets
    agree), at N pixels or more every view keeps its method's blur (BYOL's 1.0 / 0.1, SimCLR's and MoCo's 0.5
    at 224 px). Every other key is a view setting applied as given (digits: no flips)."""
    overrides = dict(data_overrides or {})
    min_blur_size = overrides.pop("min_blur_size", None)
    if min_blur_size is not None:
        check(isinstance(min_blur_size, int) and min_blur_size >= 0, "data.augment.min_blur_size", min_blur_size,
              "an image side in pixels >= 0 (below it no view blurs)")
        if size < min_blur_size:
            overrides.setdefault("blur_prob", 0.0)
    return overrides


def blur_kernel_size(size: int) -> int:
    """The Gaussian blur kernel for a crop of ``size`` pixels: ~10% of the crop, odd (SimCLR, Appendix A)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def view_pipeline(spec: ViewSpec, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """PIL image -> normalised (3, size, size) tensor."""
    ops: list = [T.RandomResizedCrop(spec.size, scale=tuple(spec.crop_scale), antialias=True)]
    if spec.hflip_prob > 0:
        ops.append(T.RandomHorizontalFlip(spec.hflip_prob))
    if spec.jitter_prob > 0:
        ops.append(T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_prob))
    if spec.grayscale_prob > 0:
        ops.append(T.RandomGrayscale(spec.grayscale_prob))
    if spec.blur_prob > 0:
        ops.append(T.RandomApply([T.GaussianBlur(blur_kernel_size(spec.size), sigma=tuple(spec.blur_sigma))],
                                 p=spec.blur_prob))
    if spec.solarize_prob > 0:
        ops.append(T.RandomSolarize(threshold=128, p=spec.solarize_prob))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class MultiViewTransform:
    """PIL image -> list of view tensors, one per view (``count`` expanded), in ``views`` order.

    Args:
        views: per-view overrides of the shared settings, e.g. ``[{blur_prob: 1.0}, {blur_prob: 0.1,
            solarize_prob: 0.2}]``; ``size_ratio`` scales the crop size relative to ``size`` (multi-crop).
        size, mean, std: the data's crop size and normalisation.
        data_overrides: settings the data imposes on every view, applied last: e.g. no horizontal flip for
            digits (not mirror-invariant); ``min_blur_size`` turns blur off on images smaller than it
            (:func:`data_view_overrides`: no Gaussian blur on 32x32 CIFAR, SimCLR, Appendix B.9).
        **shared: any :class:`ViewSpec` field, applied to every view unless the view overrides it.
    """

    def __init__(self, views=None, size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), data_overrides=None, **shared):
        allowed = {f.name for f in fields(ViewSpec)} - {"size", "count"}
        for key in shared:
            check(key in allowed, f"augment.{key}", shared[key], f"one of the view settings {sorted(allowed)}")
        self.views = [dict(v) for v in (views if views is not None else [{}, {}])]
        check(len(self.views) >= 1, "augment.views", self.views, "a list of at least one view")
        self.size, self.mean, self.std, self.shared = size, list(mean), list(std), dict(shared)
        data_overrides = data_view_overrides(data_overrides, size)
        for key in data_overrides:
            check(key in allowed, f"data.augment.{key}", data_overrides[key], f"one of the view settings {sorted(allowed)}")
        base = ViewSpec(size=size, **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in shared.items()})
        self.specs: list[ViewSpec] = []
        for view in self.views:
            view = dict(view)
            ratio = view.pop("size_ratio", 1.0)
            unknown = set(view) - {f.name for f in fields(ViewSpec)}
            check(not unknown, "augment.views", sorted(unknown), f"view keys among {sorted(allowed | {'size', 'count', 'size_ratio'})}")
            view = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in view.items()}
            view.setdefault("size", max(2, int(round(size * ratio))))
            spec = replace(base, **view)
            spec = replace(spec, **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in data_overrides.items()})
            self.specs.append(spec)
        self.pipelines = [(view_pipeline(s, self.mean, self.std), s.count) for s in self.specs]

    @property
    def view_specs(self) -> list[ViewSpec]:
        """The spec of each produced view, in order (``count`` expanded)."""
        return [s for s in self.specs for _ in range(s.count)]

    @property
    def view_sizes(self) -> list[int]:
        """Crop size of each produced view, in order."""
        return [s.size for s in self.view_specs]

    @property
    def num_views(self) -> int:
        return len(self.view_sizes)

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [pipeline(image) for pipeline, count in self.pipelines for _ in range(count)]


#: the centre crop of ImageNet-scale evaluation: resize the short side to size / 0.875 (256 for 224), crop size
IMAGENET_CROP_RATIO = 224 / 256
#: from this image side on, evaluation resizes to 256/224 of the size and centre-crops (ImageNet-scale data)
IMAGENET_SCALE = 128
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def eval_crop_ratio(size: int, crop_ratio: float | None = None) -> float:
    """``crop_ratio`` or, when ``None``, what the image size calls for: 224/256 from :data:`IMAGENET_SCALE`
    pixels on (the resize-256, centre-crop-224 of every official ImageNet evaluation), 1 below (CIFAR, STL-10)."""
    if crop_ratio is None:
        return IMAGENET_CROP_RATIO if size >= IMAGENET_SCALE else 1.0
    return crop_ratio


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float], crop_ratio: float | None = 1.0,
                   interpolation: str = "bilinear") -> T.Compose:
    """The non-augmented evaluation view: resize the short side to ``size / crop_ratio``, centre-crop ``size``,
    normalise. ``crop_ratio=None`` follows the size (:func:`eval_crop_ratio`: 256 -> 224 on ImageNet);
    ``interpolation`` is ``bilinear`` or ``bicubic`` (the official linear evaluations of Barlow Twins, VICReg,
    MAE and BEiT resize bicubically)."""
    check(interpolation in INTERPOLATIONS, "data.eval_interpolation", interpolation, f"one of {', '.join(INTERPOLATIONS)}")
    ratio = eval_crop_ratio(size, crop_ratio)
    check(0 < ratio <= 1, "data.eval_crop_ratio", ratio, "a fraction in (0, 1] of the resized image kept by the centre crop")
    resize = int(round(size / ratio))
    return T.Compose([T.Resize(resize, interpolation=INTERPOLATIONS[interpolation], antialias=True), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(mean, std)])
