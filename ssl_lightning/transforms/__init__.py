"""Augmentations: multi-view / multi-crop pipelines, patch masks for masked image modelling, pretext-task
transforms and the evaluation transform."""

from ssl_lightning.transforms.jigsaw import JigsawTransform
from ssl_lightning.transforms.masking import (
    BlockwiseMasking,
    MaskedImageTransform,
    MaskedMultiViewTransform,
    RandomMasking,
    RandomRatioBlockwiseMasking,
    mask_to_ids,
    random_masking,
)
from ssl_lightning.transforms.multiblock import MultiBlockMasking, MultiBlockTransform
from ssl_lightning.transforms.permutations import hamming_permutations, min_hamming_distance
from ssl_lightning.transforms.rotation import rotate_batch
from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, eval_transform, view_pipeline

__all__ = [
    "BlockwiseMasking",
    "JigsawTransform",
    "MaskedImageTransform",
    "MaskedMultiViewTransform",
    "MultiBlockMasking",
    "MultiBlockTransform",
    "MultiViewTransform",
    "RandomMasking",
    "RandomRatioBlockwiseMasking",
    "ViewSpec",
    "eval_transform",
    "hamming_permutations",
    "mask_to_ids",
    "min_hamming_distance",
    "random_masking",
    "rotate_batch",
    "view_pipeline",
]
