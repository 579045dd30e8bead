"""Masked language modelling: BERT (Devlin et al., 2019), with RoBERTa's dynamic masking (Liu et al., 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from ssl_lightning.config import check
from ssl_lightning.data.text import MLMCollator
from ssl_lightning.losses.lm import IGNORE_INDEX
from ssl_lightning.methods.text import TextMethod


class MLM(TextMethod):
    """A bidirectional transformer encoder predicts the tokens hidden by the collator (Sec. 3.1, "Task #1").

    15% of each sequence's ordinary tokens are chosen; of those 80% become ``<mask>``, 10% a random token and
    10% stay unchanged; the loss is the cross-entropy on the chosen positions only (:class:`MLMCollator`).
    The output layer is BERT's: ``Linear(D, D) -> GELU -> LayerNorm`` then a decoder tied to the input token
    embedding, plus a per-token bias. Logs ``val/loss``, ``val/ppl`` (of the masked tokens) and
    ``val/mlm_acc`` (top-1 accuracy on them).

    Args:
        mask_prob: fraction of tokens chosen for prediction, in (0, 1).
        mask_token_prob, random_token_prob: of the chosen tokens, the fractions replaced by ``<mask>`` and by a
            random token; the rest stay unchanged.
    """

    is_causal = False

    def __init__(self, backbone, optimizer, scheduler=None, mask_prob: float = 0.15, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1, lr_scaling: str = "none", grad_clip: float | None = 1.0,
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, grad_clip, compile=compile, sync_batchnorm=sync_batchnorm)
        check(0 < mask_prob < 1, "method.mask_prob", mask_prob, "a probability in (0, 1)")
        check(0 <= mask_token_prob <= 1, "method.mask_token_prob", mask_token_prob, "a probability in [0, 1]")
        check(0 <= random_token_prob <= 1 - mask_token_prob, "method.random_token_prob", random_token_prob,
              f"a probability in [0, 1 - mask_token_prob = {1 - mask_token_prob:g}]")
        self.collator = MLMCollator(backbone.vocab_size, mask_prob, mask_token_prob, random_token_prob)
        d = backbone.num_features
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-6))
        nn.init.normal_(self.transform[0].weight, std=0.02)
        nn.init.zeros_(self.transform[0].bias)
        self.decoder_bias = nn.Parameter(torch.zeros(backbone.vocab_size))
        self.val_acc = MeanMetric()

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """(N, D) features of masked positions -> (N, V) logits; decoder weight = input token embedding."""
        return F.linear(self.transform(h), self.backbone.token_embed.weight, self.decoder_bias)

    def max_labels(self, seq_len: int) -> int:
        """The collator labels ``round(mask_prob x n)`` of a sequence's n <= T ordinary tokens (at least one)."""
        return min(seq_len, max(1, int(self.collator.mask_prob * seq_len + 0.5)))

    def update_val_metrics(self, logits: torch.Tensor, targets: torch.Tensor, count: torch.Tensor) -> None:
        correct = (logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)
        self.val_acc.update(correct.sum() / count, count)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val/mlm_acc", self.val_acc.compute(), sync_dist=True)
        self.val_acc.reset()

    @torch.no_grad()
    def sample_text(self, ids: torch.Tensor, seed: int = 0, **_) -> str:
        """Mask the tokens ``ids`` (T,) as in training and fill the masks with the model's top-1 predictions."""
        ids = ids[: self.backbone.max_seq_len].cpu()
        inputs, labels = self.collator.mask(ids, torch.Generator().manual_seed(seed))
        was_training = self.training
        self.eval()
        logits, _ = self.labelled_logits(inputs[None].to(self.device), labels[None].to(self.device))
        self.train(was_training)
        filled = inputs.clone()
        chosen = labels != IGNORE_INDEX
        filled[chosen] = logits[0, : int(chosen.sum())].argmax(-1).cpu()  # the labelled positions come first
        decode = self.tokenizer.decode
        return f"input:\n{decode(inputs)}\n\nprediction:\n{decode(filled)}\n\noriginal:\n{decode(ids)}"
