"""A TensorBoard text sample of a language model at each validation epoch."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger


class TextSample(Callback):
    """Logs ``val/sample`` after every ``every_n_epochs``-th validation: a causal LM's sampled continuation of
    ``prompt``, or a masked LM's predictions for the masks of ``prompt`` (``pl_module.sample_text``).

    Args:
        prompt: the text to continue (or to mask); ``None``: the first ``prompt_tokens`` tokens of the
            validation split (causal LM) or its first block (masked LM), which exist for any corpus.
        max_new_tokens, temperature, top_k: sampling of the continuation.
        seed: sampling seed, so samples of successive epochs differ by the model only.
    """

    def __init__(self, prompt: str | None = None, prompt_tokens: int = 16, max_new_tokens: int = 200,
                 temperature: float = 1.0, top_k: int | None = None, every_n_epochs: int = 1, seed: int = 0):
        self.prompt, self.prompt_tokens, self.max_new_tokens = prompt, prompt_tokens, max_new_tokens
        self.temperature, self.top_k, self.every_n_epochs, self.seed = temperature, top_k, every_n_epochs, seed
        self._validations = 0

    def prompt_ids(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        if self.prompt is not None:
            return pl_module.tokenizer.encode(self.prompt)
        length = self.prompt_tokens if pl_module.is_causal else pl_module.backbone.max_seq_len
        return trainer.datamodule.tokens("val")[:length].long()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._validations += 1
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not trainer.is_global_zero or not loggers or (self._validations - 1) % self.every_n_epochs:
            return
        text = pl_module.sample_text(self.prompt_ids(trainer, pl_module), max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                     top_k=self.top_k, seed=self.seed)
        markdown = "\n".join("    " + line for line in text.split("\n"))  # a code block keeps line breaks
        for logger in loggers:
            logger.experiment.add_text("val/sample", markdown, global_step=trainer.global_step)
