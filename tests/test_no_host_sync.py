"""No host-device synchronisation in any method's training step, checked by :class:`HostSyncGuard` (the CPU
proxy of ``torch.cuda.set_sync_debug_mode("error")``, run for real by ``tests/gpu/test_steps.py``)."""

from __future__ import annotations

import pytest

from ssl_lightning.sync_guard import HostSyncGuard
from tests.method_steps import ALL_METHODS, KNOWN_SYNCS, STEP_PATHS, method_overrides, train_with_guarded_steps


# the ResNet methods with the most views per image take 25-80 s each in CPU bf16: slow-marked here (the GPU tests
# run every method under torch.cuda.set_sync_debug_mode("error")); their step code paths are shared with the rest
HEAVY = {"jigsaw", "rotation", "swav", "mocov3"}


@pytest.mark.parametrize("method", [pytest.param(m, marks=[pytest.mark.slow] if m in HEAVY else []) for m in ALL_METHODS])
def test_bf16_training_step_and_backward_never_sync(make_cfg, tiny_corpus, method, monkeypatch):
    """Two bf16-autocast steps (forward, loss, logging, backward) of every method under the guard: finite
    loss, the weights move, nothing would synchronise on a GPU."""
    cfg = make_cfg(*method_overrides(method, tiny_corpus), *STEP_PATHS.get(method, []), "trainer.fast_dev_run=2",
                   "trainer.precision=bf16-mixed")
    train_with_guarded_steps(cfg, lambda: HostSyncGuard(allow=KNOWN_SYNCS), monkeypatch)


def test_batched_device_augmentation_is_guarded_too(make_cfg, monkeypatch):
    """data.gpu_augment: the batch-transfer hook runs under the guard as well, on the path a GPU takes (every
    operation on the whole batch, selected per sample; the CPU's grouped path indexes with data-dependent
    shapes on purpose)."""
    from ssl_lightning.transforms import batched

    device_path = batched.augment_views
    monkeypatch.setattr(batched, "augment_views", lambda *a, **k: device_path(*a, **{**k, "grouped": False}))
    guards = []

    def guard():
        guards.append(HostSyncGuard(allow=KNOWN_SYNCS))
        return guards[-1]

    cfg = make_cfg(*method_overrides("simclr"), "data.gpu_augment=true", "trainer.fast_dev_run=1")
    train_with_guarded_steps(cfg, guard, monkeypatch)
    assert len(guards) >= 3  # batch transfer (training and validation), training step, backward


def test_gpu_trainer_preset_redraws_the_progress_bar_every_50_steps(make_cfg):
    from ssl_lightning.train import trainer_callbacks

    cfg = make_cfg("trainer=gpu", "trainer.enable_progress_bar=true", tiny=False)
    (bar,) = trainer_callbacks(cfg)
    assert bar.refresh_rate == 50
    assert trainer_callbacks(make_cfg("trainer=gpu", "trainer.enable_progress_bar=false", tiny=False)) == []
