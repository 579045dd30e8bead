"""Start-up validation: every bad configuration fails before training with the exact message naming the
key, the bad value and what is allowed; several problems are reported together."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.train import train

IMAGEFOLDER = ["data=imagefolder", "data.train_dir=/tmp", "data.val_dir=/tmp"]

CASES = [
    (["method.temperature=0"], "method.temperature=0 is not allowed: a float > 0"),
    (["method.temperature=-0.5"], "method.temperature=-0.5 is not allowed: a float > 0"),
    (["method=byol", "method.base_tau=1.2"], "method.base_tau=1.2 is not allowed: a momentum in [0, 1]"),
    (["method=byol", "method.final_tau=-1"], "method.final_tau=-1 is not allowed: a momentum in [0, 1]"),
    (["method.optimizer.lr=0"], "method.optimizer.lr=0 is not allowed: a base LR > 0"),
    (["method.lr_scaling=log"], "method.lr_scaling='log' is not allowed: one of linear, sqrt, none"),
    (["method.scheduler.warmup_epochs=-1"], "method.scheduler.warmup_epochs=-1 is not allowed: a number of epochs >= 0"),
    (["method.scheduler.final_lr_ratio=2"], "method.scheduler.final_lr_ratio=2 is not allowed: a fraction in [0, 1]"),
    (["data.batch_size=1"], "data.batch_size=1 is too small for SimCLR: it needs at least 2 images per device"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: an integer >= 1"),
    (["data.batch_size=abc"], "data.batch_size='abc' is not allowed: an integer >= 1"),
    (["data.batch_size=1000"], "data.batch_size=1000 is larger than the 64 training images per device: lower "
     "data.batch_size (incomplete batches are dropped, so no step would run)"),
    (["data.num_workers=-1"], "data.num_workers=-1 is not allowed: an integer >= 0"),
    (["data.std=[0,1,1]"], "data.std=[0, 1, 1] is not allowed: 3 positive values (and 3 means)"),
    (["backbone.name=resnet7"], "backbone.name='resnet7' is not allowed: one of resnet18, resnet34, resnet50, resnet101, resnet152"),
    (["backbone=vit_tiny", "backbone.patch_size=5"], "backbone.patch_size=5 is not allowed: a positive divisor of the image size 16"),
    (["backbone=vit_tiny", "+backbone.num_heads=5"], "backbone.num_heads=5 is not allowed: a divisor of embed_dim=192"),
    (["backbone=vit_tiny", "backbone.global_pool=max"], "backbone.global_pool='max' is not allowed: 'cls' or 'mean'"),
    (["backbone=vit_tiny", "backbone.size=huge"], "backbone.size='huge' is not allowed: one of tiny, small, base, large"),
    (["augment.crop_scale=[0.5,0.2]"], "augment.crop_scale=[0.5, 0.2] is not allowed: [min, max] with 0 < min <= max <= 1"),
    (["augment.blur_prob=1.5"], "augment.blur_prob=1.5 is not allowed: a probability in [0, 1]"),
    (["augment.views=[{}]"], "augment.views gives 1 views but method SimCLR needs 2"),
    (["+data.augment.sharpness=0.3"], "data.augment.sharpness=0.3 is not allowed: one of the view settings "
     "['blur_prob', 'blur_sigma', 'crop_scale', 'grayscale_prob', 'hflip_prob', 'jitter', 'jitter_prob', 'solarize_prob']"),
    (["data=imagefolder", "data.train_dir=/no/such", "data.val_dir=/tmp"],
     "data.train_dir='/no/such' is not allowed: an existing directory of class folders (DIR/<class>/<image>)"),
    ([*IMAGEFOLDER, "data.on_bad_image=ignore"], "data.on_bad_image='ignore' is not allowed: 'skip' or 'error'"),
    ([*IMAGEFOLDER, "data.verify_images=full"], "data.verify_images='full' is not allowed: 'none', 'header' or 'decode'"),
    (["data=cifar10", "data.name=mnist"], "data.name='mnist' is not allowed: one of cifar10, cifar100, stl10"),
    (["callbacks.knn.k=0"], "callbacks.knn.k=0 is not allowed: an integer >= 1"),
    (["callbacks.knn.temperature=0"], "callbacks.knn.temperature=0 is not allowed: a float > 0"),
    (["callbacks.linear_probe.lr=-1"], "callbacks.linear_probe.lr=-1 is not allowed: a learning rate > 0"),
    (["callbacks.nonfinite.mode=ignore"], "callbacks.nonfinite.mode='ignore' is not allowed: 'stop' or 'skip'"),
    (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file: give a checkpoint written by `python -m ssl_lightning.train`"),
    (["resume=/tmp"], "resume='/tmp' has no checkpoints/last.ckpt: give 'auto' or a run directory of a previous run"),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(o) for o, _ in CASES])
def test_bad_configuration_is_named_exactly(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as info:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert str(info.value) == message


def test_at_least_25_cases():
    assert len(CASES) >= 25


def test_every_problem_is_reported_at_once(make_cfg):
    with pytest.raises(ConfigError) as info:
        train(make_cfg("method.temperature=0", "data.num_workers=-1", "callbacks.knn.k=0"))
    assert str(info.value) == (
        "3 problems:\n"
        "  - data.num_workers=-1 is not allowed: an integer >= 0\n"
        "  - method.temperature=0 is not allowed: a float > 0\n"
        "  - callbacks.knn.k=0 is not allowed: an integer >= 1"
    )


def test_a_file_that_is_not_ours_is_refused(make_cfg, tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError) as info:
        train(make_cfg(f"ckpt_path={foreign}"))
    assert str(info.value) == (
        f"ckpt_path='{foreign}' is not an ssl_lightning checkpoint (no 'ssl_lightning' entry): "
        "give a checkpoint written by `python -m ssl_lightning.train`"
    )


class _Payload:
    """Any object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_objects_is_refused_not_executed(make_cfg, tmp_path, capsys):
    malicious = tmp_path / "malicious.ckpt"
    torch.save({"ssl_lightning": _Payload()}, malicious)
    with pytest.raises(ConfigError, match=r"torch.load\(weights_only=True\) refuses it .*; it holds pickled Python objects"):
        train(make_cfg(f"ckpt_path={malicious}"))
    assert "this must never run" not in capsys.readouterr().out
