"""I-JEPA: defaults, the training step against a hand-written forward, bad input, exact resume, a run that learns."""

from __future__ import annotations

import csv
import functools

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_lightning.callbacks import linear_tau
from ssl_lightning.callbacks.weight_decay import cosine_value
from ssl_lightning.config import ConfigError
from ssl_lightning.losses import ijepa_loss
from ssl_lightning.train import train
from tests.conftest import compose_config, error_of

TINY_VIT = ["backbone.depth=2", "backbone.embed_dim=32", "backbone.num_heads=2", "method.predictor_dim=16",
            "method.predictor_depth=1"]


def test_defaults_follow_the_official_recipe(make_cfg):
    cfg = make_cfg("method=ijepa", tiny=False)
    masking = cfg.augment.masking
    assert (masking.num_targets, list(masking.target_scale), list(masking.target_aspect), list(masking.context_scale)) == (
        4, [0.15, 0.2], [0.75, 1.5], [0.85, 1.0])
    assert list(cfg.augment.crop_scale) == [0.3, 1.0] and cfg.augment.hflip_prob == cfg.augment.jitter_prob == 0
    m = cfg.method
    assert (m.base_tau, m.final_tau, m.tau_schedule, m.loss) == (0.996, 1.0, "linear", "smooth_l1")
    assert (m.optimizer.weight_decay, m.weight_decay_end, list(m.optimizer.betas)) == (0.04, 0.4, [0.9, 0.999])
    assert m.optimizer.lr * 2048 / 256 == pytest.approx(1e-3)  # official LR at batch 2048
    assert (m.scheduler.start_lr_ratio, m.scheduler.final_lr_ratio) == (0.2, 1e-3)  # 2e-4 and 1e-6 of 1e-3
    assert cfg.backbone.global_pool == "mean"


def test_training_step_encodes_the_context_only_and_matches_a_hand_written_forward(make_cfg):
    cfg = make_cfg("method=ijepa", *TINY_VIT)
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    dm = instantiate(cfg.data, train_transform=instantiate(cfg.augment))
    (images, context_ids, target_ids), labels = batch = next(iter(dm.train_dataloader()))
    seen = []
    model.backbone.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    with torch.random.fork_rng():
        out = model.training_step(batch, 0)
    # the trained forward sees [CLS] + the context patches; the probe's no-grad forward the full image
    assert seen == [(images.shape[0], 1 + context_ids.shape[1], 32), (images.shape[0], 1 + 64, 32)]
    # by hand: target encoder on the full image, layer norm, gather; predictor on the context encoding
    with torch.no_grad():
        tokens = model.target_backbone.forward_tokens(images)[:, 1:]
        normed = torch.nn.functional.layer_norm(tokens, (32,))
        target = torch.stack([normed[b, target_ids[b]] for b in range(images.shape[0])])  # (B, M, Nt, D)
        context = model.backbone.forward_tokens(images, ids_keep=context_ids)[:, 1:]
        pred = model.predictor(context, context_ids, target_ids)
    assert out["loss"].item() == pytest.approx(ijepa_loss(pred, target).item(), rel=1e-5)
    assert out["h"].shape == out["z"].shape == (images.shape[0], 32) and not out["h"].requires_grad
    torch.testing.assert_close(out["z"], tokens.mean(1))
    with torch.no_grad():
        torch.testing.assert_close(out["h"], model(images))  # the context encoder on the full image, as kNN sees
    model.probe_full_image = False
    torch.testing.assert_close(model.training_step(batch, 0)["h"], context.mean(1))
    # the target encoder takes no gradient; the context encoder and the predictor do
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_backbone.parameters())
    assert model.backbone.patch_embed.weight.grad is not None and model.predictor.mask_token.grad is not None


def test_target_encoder_stays_in_eval_mode(make_cfg):
    cfg = make_cfg("method=ijepa", *TINY_VIT, "backbone.drop_path=0.5")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).train()
    assert model.backbone.training and not model.target_backbone.training
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.target_backbone(x), model.target_backbone(x))  # no stochastic depth


@pytest.mark.parametrize(("overrides", "message"), [
    (["backbone=resnet18"], "backbone='ResNet' is not allowed: a ViT"),
    (["backbone=vit_tiny_p2"], "backbone.global_pool='cls' is not allowed: 'mean' for I-JEPA"),
    (["method.loss=l1"], "method.loss='l1' is not allowed: one of smooth_l1, l2"),
    (["method.tau_schedule=step"], "method.tau_schedule='step' is not allowed: one of cosine, linear"),
    (["method.final_tau=1.5"], "method.final_tau=1.5 is not allowed: a momentum in [0, 1]"),
    (["augment.masking.min_keep=20"], "augment.masking.target_scale=[0.15, 0.2] is not allowed: target blocks that "
                                      "fit the 8x8 patch grid with more than min_keep=20 patches"),
    (["augment.masking.target_scale=[0.2,1.5]"], "augment.masking.target_scale=[0.2, 1.5] is not allowed"),
    (["augment.masking.context_scale=[0.9,0.8]"], "augment.masking.context_scale=[0.9, 0.8] is not allowed"),
    (["method.scheduler.start_lr_ratio=2"], "method.scheduler.start_lr_ratio=2 is not allowed: a fraction in [0, 1]"),
])
def test_bad_values_fail_before_training_naming_them(make_cfg, overrides, message):
    tiny = TINY_VIT[3:] if overrides == ["backbone=resnet18"] else TINY_VIT
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg("method=ijepa", *overrides, *tiny, "trainer.max_epochs=1"))
    assert message in error_of(info.value)


def test_resnet_is_rejected_by_the_method_too():
    from ssl_lightning.backbones import resnet
    from ssl_lightning.methods import IJEPA

    with pytest.raises(ConfigError, match="backbone='ResNet' is not allowed: a ViT"):
        IJEPA(resnet("resnet18"), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3))


COMMON = ["method=ijepa", *TINY_VIT, "data.num_samples=48", "data.batch_size=16", "callbacks.knn.k=10",
          "~callbacks.view_grid", "~callbacks.embedding_projector", "method.scheduler.warmup_epochs=1",
          "method.optimizer.lr=2e-3", "trainer.max_epochs=4"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_resume_equals_uninterrupted_run(tmp_path):
    """2 of 4 epochs, stop, resume: target encoder, predictor, optimizer, LR, tau and weight decay equal an
    uninterrupted run's (the masks of every batch are a function of (seed, epoch, index))."""
    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_config(full_dir, *COMMON))
    stop = "+callbacks.stop={_target_: tests.test_resume.StopAfterEpoch, epoch: 2}"
    train(compose_config(first_dir, *COMMON, stop))
    train(compose_config(resumed_dir, *COMMON, f"resume={first_dir}"))
    full, resumed = load(full_dir / "checkpoints" / "last.ckpt"), load(resumed_dir / "checkpoints" / "last.ckpt")
    half = load(first_dir / "checkpoints" / "last.ckpt")
    assert full["global_step"] == resumed["global_step"] == 2 * half["global_step"] == 12
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    key = "target_backbone.patch_embed.weight"
    assert not torch.equal(full["state_dict"][key], half["state_dict"][key])  # the target encoder moved
    assert not torch.equal(full["state_dict"][key], full["state_dict"]["backbone.patch_embed.weight"])
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    groups = full["optimizer_states"][0]["param_groups"], resumed["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in groups[0]] == [g["weight_decay"] for g in groups[1]]
    assert [g["lr"] for g in groups[0]] == [g["lr"] for g in groups[1]]


def test_run_learns_and_follows_the_schedules(tmp_path):
    """On made-up data the loss falls; tau rises linearly 0.996 -> 1 and the weight decay follows the cosine
    0.04 -> 0.4, per optimizer step; the run logs the mask sizes."""
    train(compose_config(tmp_path, "method=ijepa", *TINY_VIT, "data.num_samples=64", "data.batch_size=16",
                         "callbacks=none", "logger=csv", "trainer.max_epochs=5", "method.lr_scaling=none",
                         "method.optimizer.lr=2e-3", "method.scheduler.warmup_epochs=1"))
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    # both are logged at the step they were used for: the batch's step (weight decay, before the step) and the
    # step just taken (tau, after it); a row's "step" is the trainer's count of optimizer steps taken
    taus = [float(r["train/tau"]) for r in rows if r.get("train/tau")]
    wds = [float(r["train/weight_decay"]) for r in rows if r.get("train/weight_decay")]
    assert taus == pytest.approx([linear_tau(k, 20, 0.996, 1.0) for k in range(20)])
    assert wds == pytest.approx([cosine_value(k, 20, 0.04, 0.4) for k in range(20)])
    assert all(float(r["train/target_patches"]) > 2 for r in rows if r.get("train/target_patches"))
