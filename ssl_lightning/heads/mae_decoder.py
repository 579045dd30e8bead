"""MAE's lightweight decoder (He et al., 2022, Sec. 3 and Table 1a-b)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.backbones.vit import Block, sincos_pos_embed_2d


class MAEDecoder(nn.Module):
    """Visible-patch latents + mask tokens -> pixel predictions for every patch.

    The encoder output (B, 1 + N', D) is projected to the decoder width, a shared learned mask token is
    appended for each of the N - N' removed patches, the sequence is un-shuffled to grid order with
    ``ids_restore``, fixed 2-D sin-cos position embeddings are added (0 for [CLS]), and ``depth`` pre-LN
    transformer blocks and a linear layer predict each patch's ``patch_size**2 * 3`` pixel values.
    Paper (ViT-L, ImageNet): 8 blocks, 512 wide, 16 heads; one block already works for fine-tuning (Table 1a).

    Args:
        grid_size: patches per image side (N = grid_size**2).
        in_dim: encoder width D.
        dim, depth, num_heads, mlp_ratio: decoder transformer sizes.
        out_dim: values predicted per patch (patch_size**2 * 3).
    """

    def __init__(self, grid_size: int, in_dim: int, out_dim: int, dim: int = 512, depth: int = 8, num_heads: int = 16,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.num_patches = grid_size**2
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid_size)])  # (1 + N, dim), [CLS] first
        self.register_buffer("pos_embed", pos[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + N', D), ids_restore (B, N) -> predictions (B, N, out_dim) in grid order."""
        x = self.embed(latent)  # (B, 1 + N', d)
        B, N = ids_restore.shape
        masked = self.mask_token.to(x.dtype).expand(B, N + 1 - x.shape[1], -1)  # (B, N - N', d)
        patches = torch.cat([x[:, 1:], masked], dim=1)  # (B, N, d), shuffled order
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))  # grid order
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed  # (B, 1 + N, d)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # (B, N, out_dim)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}
