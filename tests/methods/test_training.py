"""Every image method trains on tiny made-up data: fast_dev_run, and a short run whose loss falls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from ssl_lightning.config import config_dir
from ssl_lightning.methods import MoCo
from ssl_lightning.train import train

# every image method once: BYOL's per-schedule presets (byol_300ep, ...) are the same method with other numbers
# (tests/methods/test_recipe_fidelity.py checks them; tests/test_configs.py composes and builds them)
IMAGE_METHODS = sorted(p.stem for p in (Path(config_dir()) / "method").glob("*.yaml")
                       if p.stem not in ("mlm", "clm") and not p.stem.startswith("byol_"))
SMALL_HEADS = {
    "simclr": ["method.proj_hidden_dim=64", "method.proj_output_dim=32"],
    "byol": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.pred_hidden_dim=64"],
    "simsiam": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.pred_hidden_dim=16"],
    "barlow_twins": ["method.proj_hidden_dim=64", "method.proj_output_dim=32"],
    "vicreg": ["method.proj_hidden_dim=64", "method.proj_output_dim=32"],
    # MoCo v2/v3 and SwAV (8-px images: a quarter of the compute; the CIFAR-stem ResNet and multi-crop still work)
    "moco": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.queue_size=100", "method.bn_splits=2",
             "data.image_size=8"],
    "mocov3": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.pred_hidden_dim=64", "data.image_size=8"],
    "mocov3_vit": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.pred_hidden_dim=64",
                   "backbone=vit_tiny", "+backbone.depth=2", "+backbone.embed_dim=64", "+backbone.num_heads=2"],
    "swav": ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "method.num_prototypes=20", "data.image_size=8"],
    "mae": ["backbone.depth=2", "backbone.embed_dim=32", "backbone.num_heads=2", "method.decoder_dim=32",
            "method.decoder_depth=1", "method.decoder_num_heads=2"],
    "beit": ["backbone.depth=2", "backbone.embed_dim=32", "backbone.num_heads=2", "method.vocab_size=32",
             "method.tokenizer_fit_iters=5"],
    "ijepa": ["backbone.depth=2", "backbone.embed_dim=32", "backbone.num_heads=2", "method.predictor_dim=16",
              "method.predictor_depth=1"],
    "jigsaw": ["method.tile_dim=32", "method.hidden_dim=64"],
    "rotation": ["data.image_size=8"],  # every image is seen in 4 rotations: keep the step small
    "dino": ["+backbone.depth=2", "+backbone.embed_dim=32", "+backbone.num_heads=2", "method.out_dim=64",
             "method.hidden_dim=32", "method.bottleneck_dim=16"],
    "ibot": ["+backbone.depth=2", "+backbone.embed_dim=32", "+backbone.num_heads=2", "method.out_dim=64",
             "method.hidden_dim=32", "method.bottleneck_dim=16"],
}
# Plain-SGD step size of the fixed-batch fit; VICReg's loss carries coefficients of 25, so its gradients are
# ~25x larger and 0.05 overshoots into NaN.
FIT_LR = {"vicreg": 0.01}


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_fast_dev_run(make_cfg, method):
    metrics = train(make_cfg(f"method={method}", "trainer.fast_dev_run=true", *SMALL_HEADS.get(method, [])))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_loss_falls_when_fitting_a_fixed_batch(make_cfg, method):
    """Repeated steps on one fixed batch of views must lower the method's loss (a plain optimisation check
    through the method's real training_step, heads and optimizer)."""
    cfg = make_cfg(f"method={method}", *SMALL_HEADS.get(method, []))
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    transform = instantiate(cfg.augment)
    dm = instantiate(cfg.data, train_transform=transform)
    batch = next(iter(dm.train_dataloader()))
    optimizer = torch.optim.SGD(model.parameters(), lr=FIT_LR.get(method, 0.05), momentum=0.9)
    if hasattr(model, "fit_tokenizer"):  # BEiT: fit its visual tokenizer on the training images first
        model.fit_tokenizer(dm)
    model.log = lambda *a, **k: None  # no trainer attached
    model.log_lr = lambda: None
    if isinstance(model, MoCo):  # no QueueUpdate here: a full queue of fixed negatives (it starts empty)
        with torch.no_grad():
            model.queue.copy_(torch.nn.functional.normalize(torch.randn_like(model.queue), dim=1))
            model.queue_filled.fill_(model.queue.shape[0])
    losses = []
    for step in range(15):
        loss = model.training_step(batch, step)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if hasattr(model, "momentum_pairs"):
            from ssl_lightning.callbacks import ema_update_

            for student, teacher in model.momentum_pairs():
                ema_update_(list(teacher.parameters()), list(student.parameters()), 0.9)
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses


def test_run_dir_holds_config_checkpoints_and_tensorboard_logs(make_cfg, tmp_path):
    metrics = train(make_cfg("method=byol", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", *SMALL_HEADS["byol"]))
    assert (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tau", "val/knn_top1", "val/linear_top1"} <= scalars
    assert [e.step for e in acc.Scalars("val/knn_top1")][0] == 0  # the random-init baseline
    assert "train/views" in acc.Tags()["images"]
    assert {"val/knn_top1", "val/knn_top1_init", "val/linear_top1"} <= set(metrics)
