"""SwAV: prototypes (normalised, frozen in the first epoch), codes over the global batch and the queue, the
queue through checkpoint and resume, and the crop configurations it cannot use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

import ssl_lightning.methods.swav as swav_module
from ssl_lightning.config import ConfigError
from ssl_lightning.losses import sinkhorn_knopp
from ssl_lightning.train import train
from tests.conftest import compose_config
from tests.conftest import error_of

# 2 global crops + 2 local crops of half the size: multi-crop, but cheap
SMALL = ["method=swav", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=10",
         "augment.views=[{count: 2, crop_scale: [0.14, 1.0]}, {count: 2, crop_scale: [0.05, 0.14], size_ratio: 0.5}]"]


class Snapshots(Callback):
    """Prototypes and queue fill at the end of every epoch."""

    def __init__(self):
        self.prototypes, self.filled = [], []

    def on_train_start(self, trainer, pl_module):
        self.initial = pl_module.prototypes.weight.detach().clone()

    def on_train_epoch_end(self, trainer, pl_module):
        self.prototypes.append(pl_module.prototypes.weight.detach().clone())
        self.filled.append(pl_module.queue_filled.item())


def test_prototypes_frozen_in_first_epoch_then_trained_and_kept_unit_norm_and_queue_starts_on_time(make_cfg, monkeypatch):
    snaps = Snapshots()
    monkeypatch.setattr(swav_module.SwAV, "configure_callbacks", lambda self: [self.queue_update, snaps])
    # LARS moves a weight by about lr x eta x its norm per step: a large LR and no warmup make 2 steps visible
    train(make_cfg(*SMALL, "method.queue_length=12", "method.queue_start_epoch=1", "method.freeze_prototypes_epochs=1",
                   "method.optimizer.lr=30", "method.scheduler.warmup_epochs=0", "data.num_samples=16",
                   "data.batch_size=8", "data.image_size=8", "trainer.max_epochs=2", "~callbacks", "~logger"))
    change = lambda w: ((w - snaps.initial).norm() / snaps.initial.norm()).item()  # noqa: E731
    torch.testing.assert_close(snaps.initial.norm(dim=1), torch.ones(10))
    assert change(snaps.prototypes[0]) < 1e-6  # frozen for the 2 steps of epoch 1 (renormalisation rounding only)
    assert change(snaps.prototypes[1]) > 1e-4  # trained in epoch 2
    torch.testing.assert_close(snaps.prototypes[1].norm(dim=1), torch.ones(10))
    assert snaps.filled == [0, 12]  # nothing queued in epoch 1; 2 steps x 8 samples in epoch 2, capped at 12


def test_codes_use_the_global_batch_and_the_queue_once_full(make_cfg, monkeypatch):
    """On rank 1 of 2 the codes are this rank's rows of Sinkhorn-Knopp over the gathered batch, preceded
    by the queue once it is full (and not before)."""
    cfg = make_cfg(*SMALL, "method.queue_length=6")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    g = torch.Generator().manual_seed(0)
    mine, other = F.normalize(torch.randn(4, 16, generator=g), dim=1), F.normalize(torch.randn(4, 16, generator=g), dim=1)
    monkeypatch.setattr(swav_module, "gather_no_grad", lambda z: torch.cat([other, z]))
    monkeypatch.setattr(swav_module, "rank", lambda: 1)
    prototypes = model.prototypes.weight.detach()

    expected = sinkhorn_knopp(torch.cat([other, mine]) @ prototypes.T, 0.05, 3)[4:]
    torch.testing.assert_close(model.codes(mine, crop=0, slot=0), expected)

    model.enqueue(F.normalize(torch.randn(3, 2, 16, generator=g), dim=2))  # half full: not used yet
    torch.testing.assert_close(model.codes(mine, crop=0, slot=0), expected)
    model.enqueue(F.normalize(torch.randn(3, 2, 16, generator=g), dim=2))  # full
    queued = model.queue[:, 1]
    expected = sinkhorn_knopp(torch.cat([queued, other, mine]) @ prototypes.T, 0.05, 3)[10:]
    torch.testing.assert_close(model.codes(mine, crop=1, slot=1), expected)


COMMON = [*SMALL, "method.queue_length=12", "method.queue_start_epoch=0", "data.num_samples=16", "data.batch_size=8",
          "data.image_size=8",
          "~callbacks.knn", "~callbacks.linear_probe", "~callbacks.view_grid", "~logger", "trainer.max_epochs=2"]


def test_queue_and_prototypes_resume_exactly(tmp_path):
    """2 epochs of 2 steps: the queue fills in epoch 1 (when the prototypes are frozen) and is used in epoch 2;
    a run stopped after epoch 1 and resumed ends exactly where the uninterrupted run does."""
    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_config(full_dir, *COMMON))
    train(compose_config(first_dir, *COMMON, "+callbacks.stop={_target_: tests.test_resume.StopAfterEpoch, epoch: 1}"))
    train(compose_config(resumed_dir, *COMMON, f"resume={first_dir}"))
    load = lambda p: torch.load(p / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)  # noqa: E731
    half, full, resumed = load(first_dir), load(full_dir), load(resumed_dir)
    assert half["state_dict"]["queue_filled"].item() == 12 and half["state_dict"]["queue_ptr"].item() == (2 * 8) % 12
    assert full["global_step"] == resumed["global_step"] == 4
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(full["state_dict"]["queue"], half["state_dict"]["queue"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.epsilon=0"], "method.epsilon=0 is not allowed: a float > 0"),
        (["method.epsilon=-0.05"], "method.epsilon=-0.05 is not allowed: a float > 0"),
        (["method.temperature=0"], "method.temperature=0 is not allowed: a float > 0"),
        (["method.sinkhorn_iterations=0"], "method.sinkhorn_iterations=0 is not allowed: an integer >= 1"),
        (["method.queue_length=-1"], "method.queue_length=-1 is not allowed: an integer >= 0 (0: no queue)"),
        (["method.crops_for_assign=[0,0]"], "method.crops_for_assign=[0, 0] is not allowed: distinct indices"),
        (["augment.views=[{}]"], "augment.views='1 view' is not allowed: at least 2 crops"),
        (["method.crops_for_assign=[0,9]"], "method.crops_for_assign=[0, 9] is not allowed: indices of the augmentation's 8 views"),
        (["method.crops_for_assign=[0,2]"],
         "method.crops_for_assign=[0, 2] is not allowed: indices of global crops (the largest, 16 px; the view sizes are [16, 16, 7, 7, 7, 7, 7, 7])"),
        (["backbone=vit_tiny"], "augment.views='crops of [7, 16] px' is not allowed: crops of 16 px only: VisionTransformer"),
    ],
)
def test_bad_values_and_crop_configurations_fail_before_training(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg("method=swav", *overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)
