"""Our backbones as timm models: the timm model name, its ``create_model`` arguments and the state_dict in timm's
key names, for ``python -m ssl_lightning.export format=timm``.

- ``backbone=timm``: the wrapped model's own weights (the ``model.`` prefix stripped).
- Our ViT -> ``timm.models.VisionTransformer`` with the same sizes: the same pre-LN blocks (LayerNorm eps 1e-6,
  qkv with bias, GELU MLP of ratio 4), so only names change (``mlp.0/2 -> mlp.fc1/fc2``, ``patch_embed ->
  patch_embed.proj``); our fixed sin-cos position embedding becomes timm's learnable ``pos_embed`` with a zero
  row for [CLS] (as the MAE reference's checkpoints load into timm: facebookresearch/mae ``models_vit.py``);
  ``global_pool=cls -> token``, ``mean -> avg`` with ``fc_norm=False`` (ours normalises every token, then
  averages).
- torchvision ResNets -> timm ``resnet18..152``, whose key names are torchvision's. The CIFAR stem (3x3 stride-1
  convolution, no max-pool) has no timm equivalent, so such a ResNet cannot go to timm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ssl_lightning.config import ConfigError

VIT_NAMES = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224",
             1024: "vit_large_patch16_224"}


@dataclass
class TimmExport:
    """``timm.create_model(name, num_classes=0, **model_args)`` takes ``state_dict`` (strictly)."""

    name: str
    state_dict: dict[str, torch.Tensor]
    model_args: dict[str, Any] = field(default_factory=dict)

    def create_call(self, file: str) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.model_args.items())
        return (f"timm.create_model({self.name!r}, pretrained=True, pretrained_cfg_overlay=dict(file={file!r}), "
                f"num_classes=0{args})")


def vit_to_timm(model: nn.Module, config: dict[str, Any]) -> TimmExport:
    """Our :class:`~ssl_lightning.backbones.vit.VisionTransformer` in timm's names (see the module docstring)."""
    renames = {"patch_embed.weight": "patch_embed.proj.weight", "patch_embed.bias": "patch_embed.proj.bias"}
    state = {}
    for key, value in model.state_dict().items():
        key = renames.get(key, key).replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.", ".mlp.fc2.")
        state[key] = value.detach().cpu().clone()
    pos = model.pos_embed.detach().cpu()  # (1, N, D), a non-persistent buffer
    state["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1).contiguous()  # (1, 1 + N, D)
    block = model.blocks[0]
    mlp_ratio = block.mlp[0].out_features / model.embed_dim
    args: dict[str, Any] = dict(img_size=model.image_size, patch_size=model.patch_size, embed_dim=model.embed_dim,
                                depth=len(model.blocks), num_heads=block.attn.num_heads, mlp_ratio=mlp_ratio,
                                global_pool="token" if model.global_pool == "cls" else "avg")
    if model.global_pool == "mean":
        args["fc_norm"] = False
    name = VIT_NAMES.get(model.embed_dim, "vit_base_patch16_224")  # every size is given in model_args
    return TimmExport(name, state, args)


def to_timm(model: nn.Module, config: dict[str, Any]) -> TimmExport:
    """The timm equivalent of a backbone built from ``config``; ``ConfigError`` when there is none."""
    from ssl_lightning.backbones.timm_backbone import TimmBackbone
    from ssl_lightning.backbones.vit import VisionTransformer

    target = config.get("_target_", "")
    if isinstance(model, TimmBackbone):
        args = {k: v for k, v in (("img_size", config.get("img_size")), ("patch_size", config.get("patch_size")),
                                  *(config.get("model_args") or {}).items()) if v is not None}
        if not getattr(model.model, "pretrained_cfg", {}).get("fixed_input_size"):
            args.pop("img_size", None)
        state = {k.removeprefix("model."): v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return TimmExport(model.name, state, args)
    if isinstance(model, VisionTransformer):
        return vit_to_timm(model, config)
    if target == "ssl_lightning.backbones.resnet":
        if config.get("cifar_stem"):
            raise ConfigError("format=timm is not allowed for this backbone: a ResNet with the CIFAR stem "
                              "(backbone.cifar_stem=true: 3x3 stride-1 convolution, no max-pool) has no timm equivalent; "
                              "use format=torch or format=safetensors (a torchvision ResNet with that stem), or pretrain "
                              "with backbone=timm backbone.name=resnet18")
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return TimmExport(config.get("name", "resnet18"), state, {})
    raise ConfigError(f"format=timm is not allowed for this backbone: {target or type(model).__name__} has no timm "
                      "equivalent (timm takes image backbones: backbone=timm, our ViT, torchvision ResNets); "
                      "use format=torch or format=safetensors")
