"""Projectors, predictors and other heads."""

from ssl_lightning.heads.mlp import MLP

__all__ = ["MLP"]
