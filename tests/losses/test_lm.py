import math

import pytest
import torch

from ssl_lightning.losses import lm_loss


def lm_loss_reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-1/|S| sum_{i in S} log(exp(l_i[y_i]) / sum_v exp(l_i[v])) over the positions S with a label, in float64
    (Devlin et al., 2019, Sec. 3.1; Radford et al., 2018, Eq. 1), written as loops."""
    logits, total, count = logits.double().reshape(-1, logits.shape[-1]), torch.zeros((), dtype=torch.float64), 0
    for row, y in zip(logits, labels.reshape(-1).tolist()):
        if y == -100:
            continue
        total += -torch.log(torch.exp(row[y]) / torch.exp(row).sum())
        count += 1
    return total / count


def test_matches_reference_with_ignored_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g) * 3
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[torch.rand(3, 7, generator=g) < 0.4] = -100
    assert lm_loss(logits, labels).item() == pytest.approx(lm_loss_reference(logits, labels).item(), rel=1e-6)


def test_uniform_logits_give_log_vocab_size():
    for vocab in (2, 65, 50257):
        assert lm_loss(torch.zeros(4, vocab), torch.randint(0, vocab, (4,))).item() == pytest.approx(math.log(vocab), rel=1e-6)


def test_ignored_positions_do_not_count_and_fp32_under_bf16():
    logits = torch.randn(6, 9)
    labels = torch.tensor([1, -100, 3, -100, -100, 8])
    keep = labels != -100
    assert lm_loss(logits, labels).item() == pytest.approx(lm_loss(logits[keep], labels[keep]).item(), rel=1e-6)
    assert lm_loss(logits.bfloat16(), labels).dtype == torch.float32
