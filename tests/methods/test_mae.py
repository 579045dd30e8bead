"""MAE: visible-only encoding inside the method, loss on masked patches, reconstructions in TensorBoard."""

import pytest
import torch
from hydra.utils import instantiate

from ssl_lightning.backbones import patchify
from ssl_lightning.losses import mae_loss
from ssl_lightning.train import train
from ssl_lightning.transforms import random_masking
from tests.methods.test_training import SMALL_HEADS

SMALL = ["method=mae", *SMALL_HEADS["mae"]]


def build(make_cfg, *overrides):
    cfg = make_cfg(*SMALL, *overrides)
    torch.manual_seed(0)
    return cfg, instantiate(cfg.method, backbone=instantiate(cfg.backbone))


def test_defaults_follow_the_paper(make_cfg):
    cfg = make_cfg("method=mae", tiny=False)
    assert cfg.method.mask_ratio == 0.75 and cfg.method.norm_pix_loss is True
    assert cfg.method.optimizer.betas == [0.9, 0.95] and cfg.method.optimizer.weight_decay == 0.05
    assert cfg.method.optimizer.lr == 1.5e-4 and cfg.method.scheduler.warmup_epochs == 40
    assert cfg.augment.crop_scale == [0.2, 1.0] and cfg.augment.jitter_prob == 0.0
    assert cfg.backbone._target_.endswith("vit") and cfg.augment.masking.mask_ratio == 0.75


def test_mask_ratio_override_reaches_the_data_pipeline(make_cfg):
    cfg = make_cfg("method=mae", "method.mask_ratio=0.6")
    transform = instantiate(cfg.augment)
    (image, mask), _ = instantiate(cfg.data, train_transform=transform).train_dataloader().dataset[(0, 1)]
    assert mask.sum() == round(0.6 * 64) and image.shape == (3, 16, 16)


def test_training_step_encodes_only_visible_patches_and_matches_the_loss(make_cfg):
    cfg, model = build(make_cfg)
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    dm = instantiate(cfg.data, train_transform=instantiate(cfg.augment))
    (images, mask), labels = next(iter(dm.train_dataloader()))
    seen = []
    model.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    out = model.training_step(((images, mask), labels), 0)
    n, m = model.backbone.num_patches, model.num_masked
    assert m == 48 and seen == [torch.Size([images.shape[0], 1 + n - m, 32])]
    assert out["h"].shape == (images.shape[0], model.backbone.num_features) and not out["h"].requires_grad
    # the same loss from MAE's noise-sorted ids (another visible-token order): order does not matter
    ids_keep = torch.stack([torch.nonzero(~row).flatten()[torch.randperm(n - m)] for row in mask])
    ids_shuffle = torch.cat([ids_keep, torch.stack([torch.nonzero(row).flatten() for row in mask])], dim=1)
    pred = model.decoder(model.backbone.forward_tokens(images, ids_keep), torch.argsort(ids_shuffle, dim=1))
    expected = mae_loss(pred, patchify(images, model.backbone.patch_size), mask, norm_pix=True)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_a_perfect_normalised_pixel_prediction_reconstructs_the_image(make_cfg):
    _, model = build(make_cfg)
    images = torch.randn(2, 3, 16, 16)
    mask = random_masking(2, 64, model.num_masked, generator=torch.Generator().manual_seed(0))[2]
    target = patchify(images, 2)
    normalised = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    model.decoder.forward = lambda latent, ids_restore: normalised  # what a perfect decoder would predict
    torch.testing.assert_close(model.reconstruct(images, mask), target, atol=1e-4, rtol=1e-4)


def test_run_logs_reconstructions_and_losses(make_cfg, tmp_path):
    metrics = train(make_cfg(*SMALL, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "callbacks.knn.k=10"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))  # every events file of the run
    acc.Reload()
    images = acc.Tags()["images"]
    assert "val/reconstruction" in images and "train/views" in images
    recon = acc.Images("val/reconstruction")
    assert [e.step for e in recon] == [4, 8]  # every validation epoch
    assert {"train/loss", "train/lr", "val/loss", "val/knn_top1", "val/linear_top1"} <= set(acc.Tags()["scalars"])
    assert metrics["val/loss"] > 0
