"""What the language-modelling methods share: the tokenizer (from the data, stored in every checkpoint and
checked on resume), the loss on labelled positions, token-weighted validation loss and perplexity, and
gradient clipping by norm."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric

from ssl_lightning.backbones.text_transformer import TextTransformer
from ssl_lightning.config import ConfigError, check
from ssl_lightning.data.tokenizers import PAD_ID, Tokenizer, tokenizer_from_state
from ssl_lightning.losses import lm_loss
from ssl_lightning.losses.lm import IGNORE_INDEX
from ssl_lightning.methods.base import SSLMethod


class TextMethod(SSLMethod):
    """Base of :class:`~ssl_lightning.methods.MLM` and :class:`~ssl_lightning.methods.CLM`.

    Batches are ``(inputs (B, T), labels (B, T))`` from the method's :attr:`collator` (the text datamodule
    asks for it), labels -100 where no loss is taken. Subclasses set ``is_causal`` and ``collator`` and
    implement :meth:`head`, features (N, D) -> vocabulary logits (N, V).

    Args:
        grad_clip: max global gradient norm (1.0 in BERT and GPT-2/3); ``trainer.gradient_clip_val``, when set,
            wins. ``None``: no clipping.
    """

    num_views = None  # no image views
    min_batch_size = 1
    is_causal = False
    objective = "val/loss"  # what sweeps minimise (train.py's default objective)

    def __init__(self, backbone, optimizer, scheduler=None, lr_scaling: str = "none", grad_clip: float | None = 1.0,
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(isinstance(backbone, TextTransformer), "backbone", type(backbone).__name__,
              "a text backbone (backbone=text_nano, text_mini or text_base)")
        check(grad_clip is None or grad_clip > 0, "method.grad_clip", grad_clip, "null or a gradient norm > 0")
        self.grad_clip = grad_clip
        self.tokenizer: Tokenizer | None = None  # the data's, set in setup(); or the checkpoint's (generate)
        self.val_nll = MeanMetric()

    def head(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- data --------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        tokenizer = getattr(dm, "tokenizer", None)
        if not isinstance(tokenizer, Tokenizer):
            raise ConfigError(f"{type(self).__name__} needs text data (data=text or data=tinyshakespeare), "
                              f"not {type(dm).__name__}")
        check(self.backbone.vocab_size == tokenizer.vocab_size, "backbone.vocab_size", self.backbone.vocab_size,
              f"the data's vocabulary size ({tokenizer.describe()}); leave it null")
        check(dm.block_size <= self.backbone.max_seq_len, "data.block_size", dm.block_size,
              f"at most backbone.max_seq_len={self.backbone.max_seq_len}")
        self.tokenizer = tokenizer

    # -- steps -------------------------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token features (B, T, D) with the method's attention (bidirectional or causal)."""
        return self.backbone(ids, padding_mask=padding_mask, is_causal=self.is_causal)

    def max_labels(self, seq_len: int) -> int:
        """The most positions of a ``seq_len``-token sequence that take a loss (every one, for next-token LM)."""
        return seq_len

    def labelled_logits(self, inputs: torch.Tensor, labels: torch.Tensor, padding_mask: torch.Tensor | None = None):
        """Logits (B, K, V) and targets (B, K) at ``K = max_labels(T)`` positions per sequence that hold every
        labelled one (first, in order), targets -100 at the others (no loss).

        A fixed K instead of ``h[labels != -100]``: that shape is known only on the device, and reading it is
        a host-device synchronisation in every step on GPUs. The head still runs on K rows, not all T (MLM
        labels about 15% of the tokens; the reference BERT code gathers ``max_predictions_per_seq`` too).
        """
        h = self(inputs, padding_mask)  # (B, T, D)
        k = self.max_labels(labels.shape[1])
        if k < labels.shape[1]:
            ids = torch.argsort((labels != IGNORE_INDEX).to(torch.uint8), dim=1, descending=True, stable=True)[:, :k]
            h = torch.gather(h, 1, ids[..., None].expand(-1, -1, h.shape[-1]))  # (B, K, D)
            labels = torch.gather(labels, 1, ids)  # (B, K)
        return self.head(h), labels

    def training_step(self, batch, batch_idx: int):
        inputs, labels = batch  # training windows are whole blocks: no padding
        logits, targets = self.labelled_logits(inputs, labels)
        loss = lm_loss(logits, targets)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        return {"loss": loss}

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, labels = batch
        padding = inputs == PAD_ID  # the end of the split
        logits, targets = self.labelled_logits(inputs, labels, padding if padding.any() else None)
        count = (targets != IGNORE_INDEX).sum()
        if count:
            self.val_nll.update(lm_loss(logits, targets), count)
            self.update_val_metrics(logits, targets, count)

    def update_val_metrics(self, logits: torch.Tensor, targets: torch.Tensor, count: torch.Tensor) -> None:
        """Hook for method-specific validation metrics (MLM accuracy); ``count`` labelled targets (not -100)."""

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute()  # token-weighted mean over the whole split and all ranks
        self.val_nll.reset()
        self.log("val/loss", nll, prog_bar=True, sync_dist=True)
        self.log("val/ppl", nll.exp(), sync_dist=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val if gradient_clip_val is not None else self.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    # -- checkpoints -------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.tokenizer is not None:
            checkpoint["ssl_lightning"]["tokenizer"] = self.tokenizer.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming on data whose vocabulary differs would silently map ids to other tokens: refuse."""
        saved = (checkpoint.get("ssl_lightning") or {}).get("tokenizer")
        if saved is not None and self.tokenizer is not None and saved != self.tokenizer.state():
            raise ConfigError(vocabulary_mismatch(tokenizer_from_state(saved), self.tokenizer))


def vocabulary_mismatch(saved: Tokenizer, data: Tokenizer) -> str:
    """A message naming both vocabularies (and, for characters, what differs)."""
    detail = ""
    if saved.kind == data.kind == "char":
        only_data = "".join(sorted(set(data.chars) - set(saved.chars)))
        only_ckpt = "".join(sorted(set(saved.chars) - set(data.chars)))
        detail = f" (characters only in the data: {only_data[:40]!r}; only in the checkpoint: {only_ckpt[:40]!r})"
    return (f"the checkpoint's vocabulary ({saved.describe()}) does not match the data's ({data.describe()}){detail}: "
            "resume on the corpus and data.tokenizer the checkpoint was trained with")
