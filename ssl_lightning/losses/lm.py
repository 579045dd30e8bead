"""The language-modelling loss of BERT's masked LM (Devlin et al., 2019, Sec. 3.1) and GPT's next-token LM
(Radford et al., 2018, Eq. 1): the mean negative log-likelihood of the target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-mean log softmax(logits)[label]`` over the positions whose label is not -100, in fp32.

    Args:
        logits: (N, V) or (B, T, V) scores over the vocabulary.
        labels: (N,) or (B, T) target ids, -100 where no loss is taken (unmasked tokens, padding).
            At least one label must not be -100.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)
