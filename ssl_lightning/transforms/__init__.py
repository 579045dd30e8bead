"""Augmentations: multi-view / multi-crop pipelines and the evaluation transform."""

from ssl_lightning.transforms.views import MultiViewTransform, ViewSpec, eval_transform, view_pipeline

__all__ = ["MultiViewTransform", "ViewSpec", "eval_transform", "view_pipeline"]
