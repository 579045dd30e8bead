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


# Language methods: a tiny made-up corpus (a small grammar, about 5,000 characters) and a tiny model.
def write_tiny_corpus(path, seed: int = 0, sentences: int = 120) -> str:
    import random

    words = "the a cat dog bird sat ran flew on under over mat log tree red big small and then".split()
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + "." for _ in range(sentences)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def text_overrides(corpus: str, method: str = "clm") -> list[str]:
    return [
        f"method={method}", "data=text", f"data.path={corpus}", "data.block_size=16", "data.batch_size=8",
        "data.eval_batch_size=64", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
        "backbone.dropout=0.0", "method.scheduler.warmup_steps=5", "method.optimizer.lr=3e-3",
        "callbacks.text_sample.max_new_tokens=20",
    ]


@pytest.fixture
def tiny_corpus(tmp_path):
    return write_tiny_corpus(tmp_path / "tiny.txt")
