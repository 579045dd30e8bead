"""Causal (next-token) language modelling: GPT (Radford et al., 2018; 2019; Brown et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_lightning.data.text import CausalLMCollator
from ssl_lightning.data.tokenizers import MASK_ID, PAD_ID
from ssl_lightning.methods.text import TextMethod


class CLM(TextMethod):
    """A causal transformer (attention through SDPA with ``is_causal=True``) maximises
    ``sum_t log P(u_t | u_<t)`` (GPT, Radford et al., 2018, Eq. 1); the output layer is the input token
    embedding (tied, no bias), as in GPT-2.

    Defaults follow GPT-3 (Brown et al., 2020, Appendix B) as nanoGPT does: AdamW with betas (0.9, 0.95),
    weight decay 0.1 on matrices only (not on biases, norms or embeddings), gradient-norm clipping at 1.0,
    linear warmup then cosine decay to 10% of the peak LR. Logs ``val/loss`` and ``val/ppl``; the
    ``TextSample`` callback logs a generated continuation each validation epoch.
    """

    is_causal = True

    def __init__(self, backbone, optimizer, scheduler=None, lr_scaling: str = "none", grad_clip: float | None = 1.0,
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, grad_clip, compile=compile, sync_batchnorm=sync_batchnorm)
        self.collator = CausalLMCollator()

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V) logits with the tied token embedding."""
        return F.linear(h, self.backbone.token_embed.weight)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``ids`` (B, T0) by ``max_new_tokens`` sampled tokens: (B, T0 + max_new_tokens).

        Each step feeds the last ``max_seq_len`` tokens, divides the last position's logits by
        ``temperature`` (0: greedy), keeps the ``top_k`` most likely tokens (None or 0: all) and samples.
        ``<pad>`` and ``<mask>`` are never produced.
        """
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            context = ids[:, -self.backbone.max_seq_len :]
            logits = self.head(self(context)[:, -1]).float()  # (B, V)
            logits[:, [PAD_ID, MASK_ID]] = float("-inf")
            if temperature == 0:
                next_id = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
        self.train(was_training)
        return ids

    def sample_text(self, ids: torch.Tensor, max_new_tokens: int = 200, temperature: float = 1.0,
                    top_k: int | None = None, seed: int = 0) -> str:
        """The tokens ``ids`` (T,) followed by a sampled continuation, as text."""
        generator = torch.Generator(self.device).manual_seed(seed)
        out = self.generate(ids[None].to(self.device), max_new_tokens, temperature, top_k, generator)
        return self.tokenizer.decode(out[0])
