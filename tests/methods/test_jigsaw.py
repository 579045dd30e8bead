"""Jigsaw trains on tiny made-up data, logs pretext accuracy, checkpoints its permutation set and refuses
configurations that cannot work, before training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.data import ImageDataModule
from ssl_lightning.data.datasets import ArrayImages
from ssl_lightning.train import train
from ssl_lightning.transforms import hamming_permutations
from tests.methods.tensorboard import image_sizes, scalars
from tests.conftest import error_of

HEADS = ["method.tile_dim=32", "method.hidden_dim=64"]
VIT = ["backbone=vit_tiny", "+backbone.depth=2", "+backbone.embed_dim=64", "+backbone.num_heads=2"]
SMALL = ["method=jigsaw", *HEADS, "method.num_permutations=10", "callbacks.knn.k=10"]
BLOBS = "data._target_=tests.methods.test_jigsaw.BlobDataModule"


class BlobDataModule(ImageDataModule):
    """Made-up images whose tiles show where they belong: a bright blob of random colour near the centre of
    a dark ground, with position jitter and pixel noise. After per-tile normalisation a tile still shows the
    direction of the blob's centre, so the puzzle is solvable from tile content alone."""

    def __init__(self, num_samples: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = num_samples

    def build_split(self, split: str) -> ArrayImages:
        rng = np.random.default_rng(1 if split == "val" else 0)
        s = self.image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        images = np.empty((self.num_samples, s, s, 3), dtype=np.uint8)
        for i in range(self.num_samples):
            cy, cx = (s - 1) / 2 + rng.uniform(-1, 1, size=2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (s / 4) ** 2))[..., None]
            colour = rng.uniform(100, 255, size=3)
            images[i] = np.clip(blob * colour + rng.normal(0, 8, size=(s, s, 3)), 0, 255).astype(np.uint8)
        return ArrayImages(images, rng.integers(0, self.num_classes, size=self.num_samples))


@pytest.mark.slow  # ~20 s; test_training fits a fixed batch with jigsaw in the default suite
def test_trains_with_falling_loss_and_pretext_accuracy_above_chance(make_cfg, tmp_path):
    fast = ["method.optimizer.lr=1.0", "method.scheduler.gamma=1.0"]  # 20 steps: a constant, larger LR
    metrics = train(make_cfg(*SMALL, BLOBS, *fast, "trainer.max_epochs=5", "trainer.check_val_every_n_epoch=5"))
    logged = scalars(tmp_path)
    assert {"train/loss", "train/pretext_acc", "val/pretext_acc", "val/knn_top1", "val/linear_top1",
            "train/permutation_min_hamming"} <= set(logged)
    assert logged["train/permutation_min_hamming"] == [8.0]  # 10 permutations of 9 tiles, greedy
    loss = logged["train/loss"]
    assert sum(loss[-4:]) / 4 < 0.8 * sum(loss[:4]) / 4, loss
    assert metrics["val/pretext_acc"] > 30, metrics  # held-out images, centred tiles; chance: 10%
    # the first batch's puzzles as the network sees them: 8 boards of 3x3 tiles of 4 px with 1-px gaps
    assert image_sizes(tmp_path)["train/views"] == (2 + 16 + 2, 2 + 8 * (16 + 2))
    # the permutation set is saved with the checkpoint
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["permutations"], hamming_permutations(10, 3, 0), rtol=0, atol=0)


def test_the_checkpointed_set_is_what_the_data_pipeline_uses(make_cfg):
    cfg = make_cfg(*SMALL)
    saved = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    other_cfg = make_cfg(*SMALL, "method.permutation_seed=5")  # a run resumed with a different config builds another set ...
    resumed = instantiate(other_cfg.method, backbone=instantiate(other_cfg.backbone))
    transform = instantiate(other_cfg.augment)
    assert not torch.equal(resumed.permutations, saved.permutations)
    resumed.load_state_dict(saved.state_dict())  # ... but the checkpoint's set wins
    resumed.attach(transform)
    resumed.on_fit_start()
    torch.testing.assert_close(transform.permutations, saved.permutations, rtol=0, atol=0)


def test_validation_keeps_the_probe_interface_and_scores_clean_puzzles(make_cfg):
    cfg = make_cfg(*SMALL)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).eval()
    model.attach(instantiate(cfg.augment))
    logged = {}
    model.log = lambda name, value, **k: logged.setdefault(name, float(value))
    x, y = torch.randn(6, 3, 16, 16), torch.arange(6)
    with torch.no_grad():
        out = model.validation_step((x, y), 0)
        torch.testing.assert_close(out["h"], model(x))
    assert torch.equal(out["y"], y)
    assert 0 <= logged["val/pretext_acc"] <= 100 and logged["val/pretext_loss"] > 0


def test_vit_backbone_gets_tiles_of_its_input_size(make_cfg):
    cfg = make_cfg(*SMALL, *VIT, "trainer.fast_dev_run=true")
    assert cfg.augment.tile_size == cfg.backbone.image_size == 16
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/pretext_acc" in metrics


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.grid_size=1"], "method.grid_size=1 is not allowed: an integer >= 2"),
        (["method.grid_size=2", "method.num_permutations=25"],
         "method.num_permutations=25 is not allowed: an integer from 1 to 24 (the 4! = 24 permutations of a 2x2 grid)"),
        (["data.image_size=8"], "augment.size=8 is not allowed: an image side of at least 9 px"),
        (["augment=simclr"], "augment=MultiViewTransform is not allowed: method=jigsaw needs augment=jigsaw"),
        ([*VIT, "augment.tile_size=8"], "augment.tile_size=8 is not allowed: 16, the ViT's input size (backbone.image_size)"),
    ],
)
def test_bad_input_fails_before_training(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*SMALL, *overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)
