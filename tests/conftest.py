"""Shared fixtures: compose the real Hydra configs, shrunk to tiny made-up data."""

from __future__ import annotations

import os
import warnings

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ssl_lightning.config import config_dir

os.environ.setdefault("PYTHONHASHSEED", "0")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")

# Tiny, fast and quiet: synthetic data, no progress bars, a tiny projector where a method has one.
TINY = [
    "data=synthetic",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


def compose_config(output_dir, *overrides: str, tiny: bool = True) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *(TINY if tiny else []), *overrides])


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg("method=byol", ...)``: the composed training config, writing into ``tmp_path``."""

    def make(*overrides: str, tiny: bool = True) -> DictConfig:
        return compose_config(tmp_path, *overrides, tiny=tiny)

    return make
