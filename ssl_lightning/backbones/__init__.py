"""Backbones: image encoders map images to (B, num_features), text transformers token ids to
(B, T, num_features); every one exposes ``num_features``. Image ViTs (ours, and timm's through
:class:`TimmViT`) also expose the token interface of masked image modelling (:func:`has_token_interface`)."""

from ssl_lightning.backbones.resnet import resnet
from ssl_lightning.backbones.text_transformer import TextTransformer
from ssl_lightning.backbones.timm_backbone import TimmBackbone, timm_backbone
from ssl_lightning.backbones.timm_vit import TimmViT
from ssl_lightning.backbones.vit import VisionTransformer, patchify, unpatchify, vit


def has_token_interface(backbone) -> bool:
    """Whether ``backbone`` is an image ViT the masked-image methods can drive: ``forward_tokens`` (with
    ``ids_keep`` / ``bool_masked_pos``), ``patch_tokens``, ``pool`` and its patch geometry."""
    return isinstance(backbone, (VisionTransformer, TimmViT))


def token_interface_help(backbone) -> str:
    """What to use instead, for the error of a method that needs :func:`has_token_interface`."""
    if isinstance(backbone, TimmBackbone):
        from ssl_lightning.backbones.timm_vit import token_interface_problem

        return (f"a ViT with the token interface; timm model {backbone.name!r} has none "
                f"({token_interface_problem(backbone.model)}): use a timm ViT (backbone.name=vit_tiny_patch16_224) "
                "or backbone=vit_tiny_p2")
    return "a ViT (e.g. backbone=vit_tiny_p2, vit_tiny, vit_small, or backbone=timm backbone.name=vit_tiny_patch16_224)"


__all__ = [
    "TextTransformer",
    "TimmBackbone",
    "TimmViT",
    "VisionTransformer",
    "has_token_interface",
    "patchify",
    "resnet",
    "timm_backbone",
    "token_interface_help",
    "unpatchify",
    "vit",
]
