"""Augmentations: multi-view / multi-crop pipelines, pretext-task transforms and the evaluation transform."""

from ssl_lightning.transforms.jigsaw import JigsawTransform
from ssl_lightning.transforms.permutations import hamming_permutations, min_hamming_distance
from ssl_lightning.transforms.rotation import rotate_batch
from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, eval_transform, view_pipeline

__all__ = [
    "JigsawTransform",
    "MultiViewTransform",
    "ViewSpec",
    "eval_transform",
    "hamming_permutations",
    "min_hamming_distance",
    "rotate_batch",
    "view_pipeline",
]
