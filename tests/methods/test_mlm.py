"""Masked LM: training on tiny text with a falling loss and its validation metrics, the loss only on masked
positions, a uniform model's loss, bad masking values, and generation refused for an encoder."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.generate import main as generate_main
from ssl_lightning.train import train
from tests.conftest import text_overrides
from tests.methods.test_clm import events
from tests.conftest import error_of


def tiny_mlm(make_cfg, corpus, vocab=25):
    cfg = make_cfg(*text_overrides(corpus, "mlm"), f"backbone.vocab_size={vocab}")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    return model


def test_loss_is_taken_on_masked_positions_only(make_cfg, tiny_corpus):
    model = tiny_mlm(make_cfg, tiny_corpus).eval()
    with torch.no_grad():  # zero features -> logits = decoder bias: set one token's bias high
        model.transform[2].weight.zero_()
        model.transform[2].bias.zero_()
        model.decoder_bias[7] = 5.0
    windows = [(torch.randint(3, 25, (17,)), i) for i in range(8)]
    inputs, labels = model.collator(windows)
    loss = model.training_step((inputs, labels), 0)["loss"]
    log_p = torch.log_softmax(model.decoder_bias.detach(), 0)
    chosen = labels[labels != -100]
    assert loss.item() == pytest.approx(-log_p[chosen].mean().item(), rel=1e-5)
    with torch.no_grad():
        model.decoder_bias.zero_()  # a uniform model
    assert model.training_step((inputs, labels), 0)["loss"].item() == pytest.approx(math.log(25), rel=1e-6)


def test_trains_on_tiny_text_with_a_falling_loss_and_logs_its_metrics(make_cfg, tiny_corpus, tmp_path, capsys):
    metrics = train(make_cfg(*text_overrides(tiny_corpus, "mlm"), "trainer.max_epochs=2",
                             "trainer.check_val_every_n_epoch=1", "method.optimizer.lr=1e-2"))
    acc = events(tmp_path)
    # The untrained model is nearly uniform (loss log 25 = 3.22); 2 of 16 tokens per sequence are predicted,
    # so training losses are noisy: compare means, and the validation loss (fixed masks) with the start.
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert sum(losses[-8:]) / 8 < 0.97 * sum(losses[:8]) / 8, losses
    val = [e.value for e in acc.Scalars("val/loss")]
    assert len(val) == 2 and val[-1] < val[0] < math.log(25) - 0.2
    assert {"val/loss", "val/ppl", "val/mlm_acc"} <= set(metrics)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    assert 1 / 22 < metrics["val/mlm_acc"] <= 1  # better than a uniform guess among the 22 characters
    assert "val/sample/text_summary" in acc.Tags()["tensors"]
    with pytest.raises(SystemExit, match="holds a MLM model: generation needs a causal language model"):
        generate_main([f"ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}", "prompt=the"])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mask_prob", 0, "method.mask_prob=0 is not allowed: a probability in (0, 1)"),
    ("mask_prob", 1.5, "method.mask_prob=1.5 is not allowed: a probability in (0, 1)"),
    ("random_token_prob", 0.5, "method.random_token_prob=0.5 is not allowed: a probability in [0, 1 - mask_token_prob = 0.2]"),
])
def test_bad_masking_values_are_named(make_cfg, tiny_corpus, key, value, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*text_overrides(tiny_corpus, "mlm"), f"method.{key}={value}"))
    assert message in error_of(info.value)
