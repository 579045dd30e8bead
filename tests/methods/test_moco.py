"""MoCo v2 and v3: the queue through real training steps, checkpoints and resume; bad input."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.methods import MoCo
from ssl_lightning.train import train
from tests.conftest import compose_config
from tests.conftest import error_of

HEADS = ["method.proj_hidden_dim=32", "method.proj_output_dim=16"]
MOCO_V2 = [*HEADS, "method.bn_splits=2"]  # Shuffle-BN over 2 groups: batches of 8 suffice
QUIET = ["~callbacks", "~logger"]
TINY_IMAGES = "data.image_size=8"  # 4x cheaper than 16 px; the ResNet's CIFAR stem still works
STOP = "+callbacks.stop={_target_: tests.test_resume.StopAfterEpoch, epoch: %d}"


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("symmetric", [False, True])
def test_one_step_enqueues_each_key_of_the_batch_once(make_cfg, monkeypatch, symmetric):
    """After one optimizer step the queue holds exactly the keys the step computed (the second view's, and
    with the symmetric loss also the first view's), each once, and the pointer moved past them."""
    computed = []
    real = MoCo.keys

    def spy(self, x, view=0):
        k = real(self, x, view)
        computed.append(k.clone())
        return k

    monkeypatch.setattr(MoCo, "keys", spy)
    models = []
    monkeypatch.setattr(MoCo, "on_train_end", lambda self: models.append(self), raising=False)
    train(make_cfg("method=moco", *MOCO_V2, "method.queue_size=50", f"method.symmetric={symmetric}",
                   "trainer.max_steps=1", "data.batch_size=8", TINY_IMAGES, *QUIET))
    model = models[0]
    keys = torch.cat(computed)  # asymmetric: [k2]; symmetric: [k2, k1]
    assert keys.shape[0] == (16 if symmetric else 8)
    assert model.queue_ptr.item() == keys.shape[0]
    torch.testing.assert_close(model.queue[: keys.shape[0]], keys, rtol=0, atol=0)
    assert torch.cdist(keys, keys).add(torch.eye(len(keys))).min() > 0  # no key twice
    assert model.queue_filled.item() == keys.shape[0]  # the rest of the queue is empty: no negatives there
    assert model.queue[keys.shape[0]:].abs().max() == 0


COMMON = ["method=moco", *MOCO_V2, "method.queue_size=40", "method.symmetric=true", "method.tau=0.9",
          "data.num_samples=32", "data.batch_size=16", TINY_IMAGES, "~callbacks.knn", "~callbacks.linear_probe",
          "~callbacks.view_grid", "~logger", "trainer.max_epochs=2"]


def test_queue_round_trips_through_a_checkpoint_and_resume_continues_it(tmp_path):
    """2 epochs of 2 steps, each enqueueing 32 keys (both views of 16 images) into 40 slots, wrapping around
    mid-batch: the checkpoint holds the queue and pointer and loads into a fresh module; a run stopped after
    epoch 1 and resumed ends with exactly the queue, pointer and weights of the uninterrupted run."""
    full_dir, first_dir, resumed_dir = tmp_path / "full", tmp_path / "first", tmp_path / "resumed"
    train(compose_config(full_dir, *COMMON))
    train(compose_config(first_dir, *COMMON, STOP % 1))
    train(compose_config(resumed_dir, *COMMON, f"resume={first_dir}"))

    half = load(first_dir / "checkpoints" / "last.ckpt")
    full, resumed = load(full_dir / "checkpoints" / "last.ckpt"), load(resumed_dir / "checkpoints" / "last.ckpt")
    assert half["global_step"] == 2 and full["global_step"] == resumed["global_step"] == 4
    assert half["state_dict"]["queue_ptr"].item() == (2 * 32) % 40
    assert half["state_dict"]["queue_filled"].item() == full["state_dict"]["queue_filled"].item() == 40
    assert full["state_dict"]["queue_ptr"].item() == (4 * 32) % 40
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)

    cfg = compose_config(tmp_path / "fresh", *COMMON)
    fresh = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    assert not torch.equal(fresh.queue, half["state_dict"]["queue"])
    fresh.load_state_dict(half["state_dict"])
    torch.testing.assert_close(fresh.queue, half["state_dict"]["queue"], rtol=0, atol=0)
    assert fresh.queue_ptr.item() == 24


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=moco", "method.queue_size=0"], "method.queue_size=0 is not allowed: an integer >= 1"),
        (["method=moco", "method.queue_size=-256"], "method.queue_size=-256 is not allowed: an integer >= 1"),
        (["method=moco", "method.tau=1.5"], "method.tau=1.5 is not allowed: a momentum in [0, 1]"),
        (["method=moco", "method.temperature=0"], "method.temperature=0 is not allowed: a float > 0"),
        (["method=moco", "augment=swav"], "augment.views gives 8 views but method MoCo needs 2"),
        (["method=moco", "method.bn_splits=0"], "method.bn_splits=0 is not allowed: an integer >= 1"),
        (["method=moco", "data.batch_size=8"], "data.batch_size=8 is too small for MoCo: it needs at least 16"),
        (["method=mocov3", "method.temperature=-1"], "method.temperature=-1 is not allowed: a float > 0"),
        (["method=mocov3", "method.final_tau=2"], "method.final_tau=2 is not allowed: a momentum in [0, 1]"),
        (["method=mocov3", "method.freeze_patch_embed=true"],
         "method.freeze_patch_embed=True is not allowed: false for ResNet, which has no patch embedding"),
    ],
)
def test_bad_values_fail_before_training(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)


def test_mocov3_vit_freezes_the_random_patch_projection(make_cfg):
    cfg = make_cfg("method=mocov3_vit", "backbone=vit_tiny", "+backbone.depth=1", "+backbone.embed_dim=32",
                   "+backbone.num_heads=2", *HEADS, "method.pred_hidden_dim=32")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    assert not any(p.requires_grad for p in model.backbone.patch_embed.parameters())
    trainable = {id(p) for g in model.parameter_groups(0.1) for p in g["params"]}
    assert not any(id(p) in trainable for p in model.backbone.patch_embed.parameters())
    assert id(model.backbone.cls_token) in trainable


def test_one_device_shuffle_bn_takes_statistics_over_shuffled_groups(make_cfg):
    """On one device, keys are encoded in ``bn_splits`` groups of a shuffled batch (BatchNorm statistics per
    group) and put back in order; queries in groups of the batch order. The shuffle is a function of the step,
    so a resumed run repeats it."""
    cfg = make_cfg("method=moco", *MOCO_V2, "method.queue_size=8")
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).train()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    perm = model.shuffle_order(8, view=0, device=x.device)
    assert sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    torch.testing.assert_close(perm, model.shuffle_order(8, view=0, device=x.device), rtol=0, atol=0)
    assert not torch.equal(perm, model.shuffle_order(8, view=1, device=x.device))
    shuffled = x[perm]
    expected = torch.empty(8, 16)
    for g in range(2):  # sample n of the shuffled batch in group n % 2, one whole-batch-BN call per group
        expected[g::2] = model.encode_keys(shuffled[g::2])
    torch.testing.assert_close(model.keys(x), expected[torch.argsort(perm)])
    assert (model.keys(x) - model.encode_keys(x)).abs().max() > 1e-3  # whole-batch statistics differ
    grouped = torch.empty(8, model.backbone.num_features)
    for g in range(2):
        grouped[g::2] = model.backbone(x[g::2])
    torch.testing.assert_close(model.split_forward(model.backbone, x, 2), grouped)


def test_checkpoint_from_before_queue_filled_loads_with_a_full_queue(make_cfg):
    """Checkpoints written when the queue started as random vectors have no ``queue_filled``: on load every
    row counts as a negative, as it did then."""
    cfg = make_cfg("method=moco", *MOCO_V2, "method.queue_size=40", TINY_IMAGES)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    state = {k: v for k, v in model.state_dict().items() if k != "queue_filled"}
    checkpoint = {"state_dict": state}
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])  # strict: nothing missing
    assert model.queue_filled.item() == 40
