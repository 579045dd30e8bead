"""BEiT: masked positions only, the tokenizer fitted at the start of a run, saved and kept in checkpoints."""

import pytest
import torch
from hydra.utils import instantiate

from ssl_lightning.tokenizers import load_tokenizer
from ssl_lightning.train import train
from tests.methods.test_training import SMALL_HEADS

SMALL = ["method=beit", *SMALL_HEADS["beit"]]


def test_defaults_follow_the_paper(make_cfg):
    cfg = make_cfg("method=beit", tiny=False)
    assert cfg.method.mask_ratio == 0.4 and cfg.method.clip_grad == 3.0
    assert cfg.method.optimizer.betas == [0.9, 0.999] and cfg.method.optimizer.weight_decay == 0.05
    assert cfg.method.optimizer.lr * 2048 / 256 == pytest.approx(1.5e-3)
    assert cfg.augment.masking._target_.endswith("BlockwiseMasking") and cfg.augment.masking.min_aspect == 0.3
    assert cfg.augment.jitter == [0.4, 0.4, 0.4, 0.0] and cfg.augment.crop_scale == [0.08, 1.0]


def test_training_step_predicts_only_masked_positions(make_cfg):
    cfg = make_cfg(*SMALL)
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    dm = instantiate(cfg.data, train_transform=instantiate(cfg.augment))
    (images, mask), labels = next(iter(dm.train_dataloader()))
    with pytest.raises(RuntimeError, match="tokenizer is not ready"):
        model.training_step(((images, mask), labels), 0)
    model.fit_tokenizer(dm)
    rows = []
    model.head.register_forward_hook(lambda m, args, out: rows.append(tuple(args[0].shape)))
    out = model.training_step(((images, mask), labels), 0)
    # a fixed number of positions per image (no data-dependent shape), every masked one among them
    assert rows == [(images.shape[0], model.max_masked, 32)] and 0 < mask.float().mean() < 0.5
    assert mask.sum(dim=1).max() <= model.max_masked < mask.shape[1]
    loss, accuracy, encoded, tokens = model.forward_beit(images, mask)
    logits = model.head(encoded[:, 1:][mask])  # the reference code: the head on the masked positions only
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, tokens[mask]))
    torch.testing.assert_close(accuracy, (logits.argmax(-1) == tokens[mask]).float().mean())
    assert torch.isfinite(out["loss"]) and out["h"].shape == (images.shape[0], 32)
    assert model.code_counts.sum() == mask.numel()
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    from ssl_lightning.optim import param_groups

    decay, no_decay = param_groups(model, 0.05)
    assert any(p is model.mask_token for p in no_decay["params"]) and any(p is model.head.weight for p in decay["params"])


def test_run_fits_saves_and_checkpoints_the_tokenizer(make_cfg, tmp_path, monkeypatch):
    metrics = train(make_cfg(*SMALL, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "callbacks.knn.k=10"))
    assert 0 < metrics["train/codebook_usage"] <= 1 and metrics["train/codebook_perplexity"] > 1
    assert {"val/loss", "val/token_acc", "train/token_acc"} <= set(metrics)
    saved = load_tokenizer(tmp_path / "tokenizer.pt", image_size=16, patch_size=2, vocab_size=32)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["tokenizer.codebook"], saved.codebook, rtol=0, atol=0)

    # a resumed run takes the codebook from the checkpoint and does not fit again
    import ssl_lightning.methods.beit as beit_module

    monkeypatch.setattr(beit_module, "fit_kmeans_tokenizer", lambda *a, **k: pytest.fail("refitted on resume"))
    resumed = tmp_path / "resumed"
    from tests.conftest import compose_config

    train(compose_config(resumed, *SMALL, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "callbacks.knn.k=10", f"resume={tmp_path}"))
    ckpt2 = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.testing.assert_close(ckpt2["state_dict"]["tokenizer.codebook"], saved.codebook, rtol=0, atol=0)
    assert ckpt2["global_step"] == 2 * ckpt["global_step"]


def test_tokenizer_file_is_used_when_given(make_cfg, tmp_path):
    train(make_cfg(*SMALL, "trainer.max_steps=1", "~callbacks.knn"))
    cfg = make_cfg(*SMALL, f"method.tokenizer_path={tmp_path / 'tokenizer.pt'}")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    assert bool(model.tokenizer.fitted)
    torch.testing.assert_close(model.tokenizer.codebook, load_tokenizer(tmp_path / "tokenizer.pt", 16, 2, 32).codebook)
