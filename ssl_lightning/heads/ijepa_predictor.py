"""I-JEPA's predictor: a narrow ViT from context tokens and positional mask tokens to target representations."""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_lightning.backbones.vit import Block, sincos_pos_embed_2d
from ssl_lightning.config import check


class IJEPAPredictor(nn.Module):
    """Assran et al., 2023, Sec. 3 ("Prediction") and Appendix A.1: a narrow ViT that, for each target block,
    takes the context encoder's output plus one mask token per target patch (a shared learnable vector plus
    that patch's position embedding) and outputs a prediction of the target encoder's representation at
    every target patch. Paper: width 384, depth 12 for ViT-H/14 (6 for ViT-B/L), as many heads as the encoder.

    Follows ``VisionTransformerPredictor`` (facebookresearch/ijepa, ``src/models/vision_transformer.py``):
    linear embedding of the context tokens into the predictor width, fixed 2-D sin-cos position embeddings
    added to the context tokens and the mask tokens, pre-LN blocks, final LayerNorm and a linear projection
    back to the encoder width; the M target blocks run as M independent sequences (the context repeated);
    truncated-normal (std 0.02) init of every linear layer and of the mask token, and the output projections
    of block ``l`` (attention and MLP) divided by sqrt(2 l) (``fix_init_weight``).
    Deviation: LayerNorm eps 1e-6 (our ViT blocks) instead of 1e-5.

    Args:
        grid_size: side of the encoder's patch grid.
        embed_dim: encoder width D (input and output).
        predictor_dim, depth, num_heads, mlp_ratio, drop_path: the predictor transformer.
    """

    def __init__(self, grid_size: int, embed_dim: int, predictor_dim: int = 384, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, init_std: float = 0.02):
        super().__init__()
        check(isinstance(depth, int) and depth >= 1, "method.predictor_depth", depth, "an integer >= 1")
        check(isinstance(num_heads, int) and num_heads >= 1 and predictor_dim % num_heads == 0 and predictor_dim % 4 == 0,
              "method.predictor_dim", predictor_dim,
              f"a width divisible by 4 and by the predictor's num_heads={num_heads}")
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(predictor_dim, grid_size), persistent=False)  # (N, d)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([Block(predictor_dim, num_heads, mlp_ratio, r) for r in rates])
        self.norm = nn.LayerNorm(predictor_dim, eps=1e-6)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        nn.init.trunc_normal_(self.mask_token, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp[2].weight.div_(math.sqrt(2.0 * layer))

    def forward(self, context: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """``context`` (B, Nc, D) encoder tokens at ``context_ids`` (B, Nc); ``target_ids`` (B, M, Nt).
        Returns the predictions (B, M, Nt, D)."""
        B, M, Nt = target_ids.shape
        Nc = context_ids.shape[1]
        x = self.embed(context) + self.pos_embed[context_ids]  # (B, Nc, d)
        x = x[:, None].expand(-1, M, -1, -1).reshape(B * M, Nc, -1)  # (B M, Nc, d): one sequence per target block
        queries = self.mask_token + self.pos_embed[target_ids].reshape(B * M, Nt, -1)  # (B M, Nt, d)
        x = torch.cat([x, queries.to(x.dtype)], dim=1)  # (B M, Nc + Nt, d)
        for block in self.blocks:
            x = block(x)
        x = self.proj(self.norm(x[:, Nc:]))  # (B M, Nt, D)
        return x.reshape(B, M, Nt, -1)
