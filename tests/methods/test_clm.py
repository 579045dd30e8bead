"""Causal LM: next-token loss, a uniform model's loss, training on tiny text, checkpoint, generation, resume."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_lightning.config import ConfigError
from ssl_lightning.generate import load_language_model, main as generate_main
from ssl_lightning.train import train
from tests.conftest import compose_config, text_overrides, write_tiny_corpus

STEPS = ["trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1"]


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"))  # every events file of the run
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory):
    """One short CLM run on tiny text, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("clm")
    corpus = write_tiny_corpus(root / "tiny.txt")
    run_dir = root / "run"
    metrics = train(compose_config(run_dir, *text_overrides(corpus, "clm"), *STEPS))
    return run_dir, corpus, metrics


def test_uniform_model_loss_is_log_vocab_size(make_cfg, tiny_corpus):
    cfg = make_cfg(*text_overrides(tiny_corpus, "clm"), "backbone.vocab_size=23")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).eval()
    with torch.no_grad():  # zero features -> zero logits through the tied output layer: a uniform model
        model.backbone.norm.weight.zero_()
        model.backbone.norm.bias.zero_()
    windows = [(torch.randint(3, 23, (17,)), 0) for _ in range(4)]
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    loss = model.training_step(model.collator(windows), 0)["loss"]
    assert loss.item() == pytest.approx(math.log(23), rel=1e-6)


def test_trains_on_tiny_text_with_a_falling_loss(clm_run):
    run_dir, _, metrics = clm_run
    acc = events(run_dir)
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(losses) >= 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    vocab = load_language_model(run_dir / "checkpoints" / "last.ckpt").tokenizer.vocab_size
    val = [e.value for e in acc.Scalars("val/loss")]
    assert len(val) == 2 and val[-1] < val[0] < math.log(vocab)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-4)
    assert "val/sample/text_summary" in acc.Tags()["tensors"]  # the generated sample of each validation
    assert (run_dir / "tokenizer.json").is_file()


def test_checkpoint_reloads_and_generates(clm_run, capsys):
    run_dir, _, _ = clm_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    model = load_language_model(ckpt)
    assert model.tokenizer.decode(model.tokenizer.encode("the cat sat.")) == "the cat sat."
    generate_main([f"ckpt={ckpt}", "prompt=the dog", "max_new_tokens=30", "temperature=0.8", "top_k=5"])
    out = capsys.readouterr().out
    assert out.startswith("the dog") and len(out.rstrip("\n")) >= len("the dog") + 25
    assert set(out) <= set("the a cat dog bird sat ran flew on under over mat log tree red big small and then.\n<eos>")
    # greedy decoding ignores the seed; sampling does not
    outputs = []
    for temperature, seed in ((0, 1), (0, 2), (1.0, 1), (1.0, 2)):
        generate_main([f"ckpt={ckpt}", "prompt=the", "max_new_tokens=40", f"temperature={temperature}", f"seed={seed}"])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[2] != outputs[3]


def test_generate_arguments_are_checked(clm_run):
    run_dir, _, _ = clm_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit, match="'length=5' is not a key=value argument of generate"):
        generate_main([f"ckpt={ckpt}", "length=5"])
    with pytest.raises(SystemExit, match="characters 'Z' are not in the char vocabulary"):
        generate_main([f"ckpt={ckpt}", "prompt=Zebra"])
    with pytest.raises(SystemExit, match="ckpt='/no/such.ckpt' is not a file"):
        generate_main(["ckpt=/no/such.ckpt"])


def test_resuming_on_data_with_another_vocabulary_fails_clearly(clm_run, tmp_path):
    run_dir, _, _ = clm_run
    other = tmp_path / "other.txt"
    other.write_text(open(clm_run[1]).read().replace("c", "C"))  # same size of vocabulary, another character
    cfg = compose_config(tmp_path / "resumed", *text_overrides(str(other), "clm"), "trainer.max_epochs=3",
                         f"resume={run_dir}")
    with pytest.raises(ConfigError, match="vocabulary \\(char, 25 tokens\\) does not match the data's \\(char, 25 tokens\\) "
                       "\\(characters only in the data: 'C'; only in the checkpoint: 'c'\\)"):
        train(cfg)
