"""Bad input fails before training with a message naming the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import InstantiationException

from ssl_lightning.config import ConfigError
from ssl_lightning.train import train


def error_of(exc: BaseException) -> str:
    while exc.__cause__ is not None and not isinstance(exc, ConfigError):
        exc = exc.__cause__
    return str(exc)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.temperature=0"], "method.temperature=0 is not allowed: a float > 0"),
        (["method.temperature=-0.5"], "method.temperature=-0.5 is not allowed: a float > 0"),
        (["method=byol", "method.base_tau=1.2"], "method.base_tau=1.2 is not allowed: a momentum in [0, 1]"),
        (["method=byol", "method.base_tau=-0.1"], "method.base_tau=-0.1 is not allowed: a momentum in [0, 1]"),
        (["data.batch_size=1"], "data.batch_size=1 is too small for SimCLR: it needs at least 2 images per device"),
        (["data.batch_size=0"], "data.batch_size=0 is not allowed: an integer >= 1"),
        (["data.batch_size=1000"], "data.batch_size=1000 is larger than the 64 training images per device"),
        (["data=imagefolder", "data.train_dir=/no/such/dir", "data.val_dir=/no/such/dir"],
         "data.train_dir='/no/such/dir' is not allowed: an existing directory of class folders"),
        (["method.optimizer.lr=0"], "method.optimizer.lr=0 is not allowed: a base LR > 0"),
        (["method.lr_scaling=log"], "method.lr_scaling='log' is not allowed: one of linear, sqrt, none"),
        (["backbone.name=resnet7"], "backbone.name='resnet7' is not allowed: one of resnet18"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file"),
    ],
)
def test_bad_values_are_named(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)


def test_empty_data_directory(make_cfg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no images in class folders"):
        train(make_cfg("data=imagefolder", f"data.train_dir={empty}", f"data.val_dir={empty}", "trainer.max_epochs=1"))


def test_command_line_error_is_one_clear_line_and_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning.train", "data=synthetic", "method.temperature=-1", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Configuration error: method.temperature=-1 is not allowed: a float > 0" in result.stderr
    assert "Traceback" not in result.stderr
