"""Augmentations: multi-view / multi-crop pipelines, patch masks for masked image modelling, and the
evaluation transform."""

from ssl_lightning.transforms.masking import (
    BlockwiseMasking,
    MaskedImageTransform,
    RandomMasking,
    mask_to_ids,
    random_masking,
)
from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, eval_transform, view_pipeline

__all__ = [
    "BlockwiseMasking",
    "MaskedImageTransform",
    "MultiViewTransform",
    "RandomMasking",
    "ViewSpec",
    "eval_transform",
    "mask_to_ids",
    "random_masking",
    "view_pipeline",
]
