"""Vision Transformer (Dosovitskiy et al., 2021) for any image and patch size.

Fixed 2-D sin-cos position embeddings as in MAE (He et al., 2022), pre-LN blocks, attention through
``F.scaled_dot_product_attention``. For masked image modelling, ``forward_tokens`` accepts ``ids_keep`` so
that the encoder runs on visible patches only (MAE), or ``bool_masked_pos`` and a ``mask_token`` that
replaces the embeddings of masked patches (BEiT, Bao et al., 2022). ``patchify`` / ``unpatchify`` convert
between images and per-patch pixel vectors in the row-major patch order the ViT uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.config import check


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """(grid_size**2, embed_dim) fixed position embedding: half the channels encode rows, half columns."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim={embed_dim} must be divisible by 4 for 2-D sin-cos position embeddings")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim // 4))
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, embed_dim/2)
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def resampled_sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int, base_grid: int,
                                  device: torch.device | None = None) -> torch.Tensor:
    """(grid_h * grid_w, embed_dim): :func:`sincos_pos_embed_2d` of a ``base_grid`` grid resampled to a
    ``grid_h x grid_w`` grid that covers the same extent (cell centres at ``(i + 0.5) * base / g - 0.5``,
    as ``F.interpolate(align_corners=False)`` places them). DINO's multi-crop feeds 96-px local crops to a
    ViT built for 224 px and bicubically interpolates its learned position embedding to the 6x6 grid
    (facebookresearch/dino, ``vision_transformer.py``, ``interpolate_pos_encoding``); with fixed sin-cos
    embeddings the function itself is evaluated at the resampled positions. Equal to the base embedding
    (to fp32 rounding) when the grid is the base grid. Built on ``device`` (no host-to-device copy)."""
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float32, device=device) / (embed_dim // 4))
    r = (torch.arange(grid_h, dtype=torch.float32, device=device) + 0.5) * (base_grid / grid_h) - 0.5
    c = (torch.arange(grid_w, dtype=torch.float32, device=device) + 0.5) * (base_grid / grid_w) - 0.5
    rows, cols = torch.meshgrid(r, c, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, embed_dim/2)
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C): patch n = row-major position (n // (W/p), n % (W/p)); each vector is
    the patch's pixels in (row, column, channel) order, as MAE's targets."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p}")
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: torch.Tensor, patch_size: int, height: int | None = None, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, p*p*C) -> (B, C, H, W); ``height`` defaults to a square image."""
    B, N, _ = patches.shape
    p = patch_size
    h = (height // p) if height is not None else int(round(N**0.5))
    w = N // h
    if h * w != N:
        raise ValueError(f"{N} patches do not tile a {h}-row grid")
    x = patches.reshape(B, h, w, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, channels, h * p, w * p)


#: weight initialisations of the official codes (``VisionTransformer(init=...)``)
VIT_INITS = ("mae", "mocov3", "beit")


@torch.no_grad()
def beit_trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """BEiT's ``trunc_normal_(t, std=std)``: N(0, std) truncated at +-std (its wrapper passes ``a=-std, b=std``;
    timm's default cut is +-2), by the inverse CDF of a uniform on [Phi(-1), Phi(1)]."""
    edge = math.erf(-1 / math.sqrt(2))  # 2 Phi(-1) - 1
    return tensor.uniform_(edge, -edge).erfinv_().mul_(std * math.sqrt(2)).clamp_(-std, std)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``; ``is_causal`` lets a token see only
    itself and earlier tokens (GPT), ``attn_mask`` (B, 1, 1, T) hides keys where False (padding)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0, proj_bias: bool = True):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)  # 3x (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)  # (B, nh, T, hs)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, T, C)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` (GELU), with optional stochastic
    depth and dropout (on attention weights and on both residual branches, as in GPT-2 and BERT);
    ``bias=False`` drops the biases of every linear and LayerNorm (nanoGPT's default)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, bias=bias)
        self.attn = Attention(dim, num_heads, qkv_bias=bias, dropout=dropout, proj_bias=bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, bias=bias)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias))
        if dropout:
            self.mlp.append(nn.Dropout(dropout))
        self.drop_path = drop_path

    def _residual(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return y
        keep = torch.empty(y.shape[0], 1, 1, device=y.device, dtype=y.dtype).bernoulli_(1 - self.drop_path)
        return y * keep / (1 - self.drop_path)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self._residual(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal))
        return x + self._residual(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT encoder: ``(B, 3, H, W) -> (B, num_features)`` (the [CLS] token, or the mean of patch tokens).

    Args:
        image_size: input height and width; must be divisible by ``patch_size``.
        patch_size: side of a square patch (CIFAR: 4 or 2; ImageNet: 16).
        embed_dim, depth, num_heads, mlp_ratio: the usual sizes (ViT-Tiny 192/12/3, ViT-Small 384/12/6).
        drop_path: maximum stochastic-depth rate, increased linearly over depth.
        global_pool: ``"cls"`` or ``"mean"`` for ``forward``.
        dynamic_img_size: accept any input of at least one patch (multi-crop: DINO's and iBOT's local crops);
            the grid is the patch convolution's, and the position embedding is resampled to it
            (:func:`resampled_sincos_pos_embed_2d`). ``False``: ``image_size`` only.
        init: the weight initialisation of the official code the method comes from (:data:`VIT_INITS`):

            - ``"mae"`` (facebookresearch/mae ``models_mae.py``): Xavier-uniform linears with zero bias, the patch
              projection Xavier-uniform as a linear layer, [CLS] N(0, 0.02).
            - ``"mocov3"`` (facebookresearch/moco-v3 ``vits.py``): as ``mae`` but q, k and v initialised as
              three separate (D, D) Xavier-uniform matrices, [CLS] N(0, 1e-6), patch projection bias zero.
            - ``"beit"`` (microsoft/unilm ``beit/modeling_pretrain.py``): linears, patch projection and [CLS]
              truncated-normal(0.02) cut at +-0.02, zero biases, then each block's attention output and second
              MLP projections divided by sqrt(2 x layer id), 1-based (``fix_init_weight``).
    """

    def __init__(
        self,
        image_size: int = 32,
        patch_size: int = 4,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        global_pool: str = "cls",
        dynamic_img_size: bool = False,
        init: str = "mae",
    ):
        super().__init__()
        check(init in VIT_INITS, "backbone.init", init, f"one of {', '.join(VIT_INITS)}")
        check(patch_size > 0 and image_size % patch_size == 0, "backbone.patch_size", patch_size,
              f"a positive divisor of the image size {image_size}")
        check(embed_dim % num_heads == 0, "backbone.num_heads", num_heads, f"a divisor of embed_dim={embed_dim}")
        check(global_pool in ("cls", "mean"), "backbone.global_pool", global_pool, "'cls' or 'mean'")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.num_features = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.dynamic_img_size = bool(dynamic_img_size)

        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, self.grid_size)[None], persistent=False)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        w = self.patch_embed.weight.data
        if init == "beit":
            beit_trunc_normal_(w)
            beit_trunc_normal_(self.cls_token)
        else:
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer (MAE, MoCo v3)
            nn.init.normal_(self.cls_token, std=1e-6 if init == "mocov3" else 0.02)
        if init != "mae":
            nn.init.zeros_(self.patch_embed.bias)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if init == "beit":
                    beit_trunc_normal_(m.weight)
                elif init == "mocov3" and name.endswith("attn.qkv"):
                    bound = (6.0 / (m.weight.shape[0] // 3 + m.weight.shape[1])) ** 0.5  # q, k, v as 3 matrices
                    nn.init.uniform_(m.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if init == "beit":
            with torch.no_grad():
                for layer_id, block in enumerate(self.blocks, start=1):
                    block.attn.proj.weight.div_((2.0 * layer_id) ** 0.5)
                    block.mlp[2].weight.div_((2.0 * layer_id) ** 0.5)

    def patch_tokens(
        self, x: torch.Tensor, bool_masked_pos: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D) patch embeddings with position embeddings added.

        With ``bool_masked_pos`` (B, N) and ``mask_token`` (1, 1, D), the embedding of every masked patch is
        replaced by the mask token before the position embedding is added (BEiT, Sec. 2.2).
        """
        same_size = x.shape[-2:] == (self.image_size, self.image_size)
        if not same_size and not (self.dynamic_img_size and min(x.shape[-2:]) >= self.patch_size):
            raise ValueError(f"ViT built for {self.image_size}x{self.image_size} images got {tuple(x.shape[-2:])}")
        grid = self.patch_embed(x)  # (B, D, h, w)
        tokens = grid.flatten(2).transpose(1, 2)  # (B, N, D)
        if bool_masked_pos is not None:
            if mask_token is None:
                raise ValueError("bool_masked_pos needs a mask_token of shape (1, 1, embed_dim)")
            tokens = torch.where(bool_masked_pos[..., None], mask_token.to(tokens.dtype), tokens)
        if same_size:
            return tokens + self.pos_embed
        pos = resampled_sincos_pos_embed_2d(self.embed_dim, grid.shape[-2], grid.shape[-1], self.grid_size, x.device)
        return tokens + pos.to(tokens.dtype)

    def forward_tokens(
        self,
        x: torch.Tensor,
        ids_keep: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode; returns normalised tokens (B, 1 + N', D), [CLS] first.

        ``ids_keep`` (B, N') selects the visible patches, so the encoder's cost scales with N' (MAE).
        ``bool_masked_pos`` (B, N) with ``mask_token`` (1, 1, D) replaces masked patches (BEiT); N' = N.
        """
        tokens = self.patch_tokens(x, bool_masked_pos, mask_token)  # (B, N, D)
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))  # (B, N', D)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N', D) encoder output -> (B, D) features: the [CLS] token or the mean of patch tokens."""
        return tokens[:, 0] if self.global_pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(x))

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the token path in place: ``forward_tokens``, which MAE and BEiT call directly
        (``nn.Module.compile`` wraps only ``__call__``) and ``forward`` calls; the pooling stays eager."""
        self.forward_tokens = torch.compile(self.forward_tokens, *args, **kwargs)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}


def vit(size: str = "tiny", **kwargs) -> VisionTransformer:
    """ViT presets by name; keyword arguments override the preset (``None`` values keep the preset's)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    presets = {
        "tiny": dict(embed_dim=192, depth=12, num_heads=3),
        "small": dict(embed_dim=384, depth=12, num_heads=6),
        "base": dict(embed_dim=768, depth=12, num_heads=12),
        "large": dict(embed_dim=1024, depth=24, num_heads=16),
    }
    check(size in presets, "backbone.size", size, f"one of {', '.join(presets)}")
    return VisionTransformer(**{**presets[size], **kwargs})


__all__ = ["VIT_INITS", "VisionTransformer", "beit_trunc_normal_", "patchify", "resampled_sincos_pos_embed_2d",
           "sincos_pos_embed_2d", "unpatchify", "vit"]
