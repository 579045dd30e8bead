"""Backbones: every one maps images to (B, num_features) and exposes ``num_features``."""

from ssl_lightning.backbones.resnet import resnet
from ssl_lightning.backbones.vit import VisionTransformer, patchify, unpatchify, vit

__all__ = ["VisionTransformer", "patchify", "resnet", "unpatchify", "vit"]
