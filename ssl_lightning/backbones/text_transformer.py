"""A transformer over token ids: BERT's encoder (Devlin et al., 2019) and GPT's decoder (Radford et al.,
2018; 2019) are the same stack of blocks, so one class serves both and the *method* chooses bidirectional
(masked LM) or causal (``is_causal=True``, next-token LM) attention.

Token and learned position embeddings, dropout, pre-LN blocks (the ViT's :class:`Block`: GELU MLP,
attention through ``F.scaled_dot_product_attention``) and a final LayerNorm, as in GPT-2. The output layer
belongs to the method, tied to ``token_embed.weight``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ssl_lightning.backbones.vit import Block
from ssl_lightning.config import check


class TextTransformer(nn.Module):
    """``(B, T)`` token ids -> ``(B, T, num_features)`` normalised token features.

    Initialisation as GPT-2 (Radford et al., 2019, Sec. 2.3): weights and embeddings N(0, 0.02), biases 0, and
    the projections that write into the residual stream scaled by ``1 / sqrt(2 * depth)``.

    Args:
        vocab_size: number of token ids (the data's tokenizer sets it).
        max_seq_len: longest sequence (``data.block_size``); the size of the position embedding.
        embed_dim, depth, num_heads, mlp_ratio: the usual sizes.
        dropout: on embeddings, attention weights and residual branches (0.1 in BERT and GPT-2).
        bias: biases in the linears and LayerNorms (BERT, GPT-2); nanoGPT leaves them out by default.
        decay_embeddings: apply weight decay to the token and position embeddings too (nanoGPT decays every
            2-D tensor); by default they take none, as in BERT and GPT-2 practice.
    """

    def __init__(self, vocab_size: int, max_seq_len: int, embed_dim: int = 256, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.1, bias: bool = True, decay_embeddings: bool = False):
        super().__init__()
        check(isinstance(vocab_size, int) and vocab_size > 0, "backbone.vocab_size", vocab_size,
              "a positive integer (set from the data's tokenizer when left null)")
        check(isinstance(max_seq_len, int) and max_seq_len > 0, "backbone.max_seq_len", max_seq_len, "a positive integer")
        check(embed_dim % num_heads == 0, "backbone.num_heads", num_heads, f"a divisor of embed_dim={embed_dim}")
        check(0 <= dropout < 1, "backbone.dropout", dropout, "a probability in [0, 1)")
        self.vocab_size, self.max_seq_len, self.decay_embeddings = vocab_size, max_seq_len, decay_embeddings
        self.num_features = self.embed_dim = embed_dim
        self.token_embed = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed = nn.Embedding(max_seq_len, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, dropout=dropout, bias=bias)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6, bias=bias)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for block in self.blocks:  # the two projections that add into the residual stream
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * depth))

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """``ids`` (B, T); ``padding_mask`` (B, T) True at padding, which no token attends to; ``is_causal``:
        token t attends to tokens <= t only. Returns (B, T, D)."""
        B, T = ids.shape
        if T > self.max_seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={self.max_seq_len}")
        x = self.drop(self.token_embed(ids) + self.pos_embed.weight[:T])  # (B, T, D)
        mask = None
        if padding_mask is not None:
            mask = ~padding_mask[:, None, None, :]  # (B, 1, 1, T): True where a key may be attended
            if is_causal:  # SDPA takes a mask or is_causal, not both
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
                is_causal = False
        for block in self.blocks:
            x = block(x, attn_mask=mask, is_causal=is_causal)
        return self.norm(x)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Embeddings take no weight decay unless ``decay_embeddings`` (biases and norms never do: ``param_groups``
        finds them by ndim)."""
        return set() if self.decay_embeddings else {"token_embed.weight", "pos_embed.weight"}


__all__ = ["TextTransformer"]
