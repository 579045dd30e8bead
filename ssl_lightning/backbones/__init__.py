"""Backbones: image encoders map images to (B, num_features), text transformers token ids to
(B, T, num_features); every one exposes ``num_features``."""

from ssl_lightning.backbones.resnet import resnet
from ssl_lightning.backbones.text_transformer import TextTransformer
from ssl_lightning.backbones.vit import VisionTransformer, patchify, unpatchify, vit

__all__ = [
    "TextTransformer",
    "VisionTransformer",
    "patchify",
    "resnet",
    "unpatchify",
    "vit",
]
