"""A timm Vision Transformer behind the token interface of our ViT, for the masked-image methods.

MAE, BEiT (and the token-level methods of DINO / iBOT / I-JEPA) call ``forward_tokens(x, ids_keep=...)`` /
``forward_tokens(x, bool_masked_pos=..., mask_token=...)`` and read ``patch_size``, ``grid_size``, ... from
the backbone. :class:`TimmViT` runs timm's own modules for that: its patch embedding, position embedding,
prefix tokens, ``norm_pre``, blocks and final norm, and pools as timm's head does, so the weights stay those
of ``timm.models.VisionTransformer`` under ``model.`` (a ViT pretrained here with MAE loads back into timm
unchanged) and ``forward`` equals ``timm.create_model(name, num_classes=0)(x)``.

The order is that of the MAE reference (facebookresearch/mae, ``models_mae.py``, ``forward_encoder``): patch
embedding, + position embedding, keep the visible patches, prepend [CLS] with its position embedding, blocks,
norm. Register tokens (``vit_*_reg*``) are prepended after [CLS] and dropped from the output after the final
norm, so the output is ``(B, 1 + N', D)`` with [CLS] first, as for our ViT.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.backbones.timm_backbone import TimmBackbone

POOLS = ("token", "avg")


def token_interface_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot run behind :class:`TimmViT` (``None`` if it can)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return f"it is a {type(model).__name__}, not a timm VisionTransformer (vit_*, deit_*)"
    if model.cls_token is None:
        return "it has no [CLS] token (class_token=False)"
    if model.pos_embed is None or getattr(model, "dynamic_img_size", False):
        return "it has no fixed absolute position embedding (pos_embed='none' or dynamic_img_size=True)"
    if model.attn_pool is not None or model.global_pool not in POOLS:
        return f"its global_pool={model.global_pool!r} is not one of {POOLS}"
    if not isinstance(model.patch_drop, nn.Identity):
        return "it drops patches itself (patch_drop_rate > 0)"
    return None


class TimmViT(TimmBackbone):
    """``timm.models.VisionTransformer`` with our ViT's interface: ``(B, 3, H, W) -> (B, num_features)`` and
    ``forward_tokens`` / ``patch_tokens`` / ``pool`` for masked image modelling (square images and patches)."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__(model, name)
        size, patch = model.patch_embed.img_size, model.patch_embed.patch_size
        if size[0] != size[1] or patch[0] != patch[1]:
            raise ValueError(f"TimmViT takes square images and patches, got img_size={size}, patch_size={patch}")
        self.image_size, self.patch_size = int(size[0]), int(patch[0])
        self.grid_size = self.image_size // self.patch_size
        self.num_patches = self.grid_size**2
        self.embed_dim = int(model.embed_dim)

    # the modules the methods reach for (MoCo v3 freezes patch_embed, fine-tuning walks blocks)
    @property
    def patch_embed(self) -> nn.Module:
        return self.model.patch_embed

    @property
    def blocks(self) -> nn.Sequential:
        return self.model.blocks

    @property
    def norm(self) -> nn.Module:
        return self.model.norm

    def _split_pos_embed(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(prefix-token position embeddings (1, P, D) or None, patch position embeddings (1, N, D))."""
        pos = self.model.pos_embed
        if self.model.no_embed_class:
            return None, pos
        k = self.model.num_prefix_tokens
        return pos[:, :k], pos[:, k:]

    def patch_tokens(
        self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D) patch embeddings plus position embeddings; masked patches (B, N) replaced
        by ``mask_token`` (1, 1, D) before the position embedding is added (BEiT, Sec. 2.2)."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images got {tuple(x.shape[-2:])}")
        tokens = self.model.patch_embed(x)  # (B, N, D)
        if bool_masked_pos is not None:
            if mask_token is None:
                raise ValueError("bool_masked_pos needs a mask_token of shape (1, 1, embed_dim)")
            tokens = torch.where(bool_masked_pos[..., None], mask_token.to(tokens.dtype), tokens)
        return tokens + self._split_pos_embed()[1]

    def forward_tokens(
        self,
        x: torch.Tensor,
        ids_keep: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode; returns normalised tokens (B, 1 + N', D), [CLS] first (register tokens dropped).

        ``ids_keep`` (B, N') selects the visible patches, so the cost scales with N' (MAE);
        ``bool_masked_pos`` (B, N) with ``mask_token`` (1, 1, D) replaces masked patches (BEiT); N' = N.
        """
        m = self.model
        tokens = self.patch_tokens(x, bool_masked_pos, mask_token)  # (B, N, D)
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, N', D)
        B = tokens.shape[0]
        prefix = [m.cls_token.expand(B, -1, -1)] + ([m.reg_token.expand(B, -1, -1)] if m.reg_token is not None else [])
        prefix = torch.cat(prefix, dim=1)  # (B, P, D)
        prefix_pos = self._split_pos_embed()[0]
        if prefix_pos is not None:
            prefix = prefix + prefix_pos
        tokens = m.norm_pre(m.pos_drop(torch.cat([prefix, tokens], dim=1)))  # (B, P + N', D)
        tokens = m.norm(m.blocks(tokens))
        if m.num_prefix_tokens > 1:  # keep [CLS] and the patches
            tokens = torch.cat([tokens[:, :1], tokens[:, m.num_prefix_tokens:]], dim=1)  # (B, 1 + N', D)
        return tokens

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N', D) -> (B, D) as timm's head: [CLS] (``token``) or the mean of the patches (``avg``),
        then timm's ``fc_norm``."""
        pooled = tokens[:, 0] if self.model.global_pool == "token" else tokens[:, 1:].mean(dim=1)
        return self.model.head_drop(self.model.fc_norm(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(x))
