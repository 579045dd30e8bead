"""Shared fixtures: compose the real Hydra configs, shrunk to tiny made-up data."""

from __future__ import annotations

import os
import warnings

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ssl_lightning.config import ConfigError, config_dir

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
# -- tiny pretraining runs shared by the evaluation / export tests (trained once per session) ------------

PRETRAIN = ["method.proj_hidden_dim=64", "method.proj_output_dim=32", "data.num_samples=64", "data.batch_size=16",
            "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "callbacks.knn.k=10"]
TINY_VIT = ["backbone=vit_tiny", "+backbone.depth=2", "+backbone.embed_dim=32", "+backbone.num_heads=2"]


@pytest.fixture(scope="session")
def pretrained_resnet(tmp_path_factory):
    """Run dir of a 4-step SimCLR ResNet-18 run on synthetic data with the default callbacks."""
    from ssl_lightning.train import train

    run = tmp_path_factory.mktemp("pretrained_resnet")
    train(compose_config(run, *PRETRAIN, "callbacks.embedding_projector.num_points=50"))
    return run


@pytest.fixture(scope="session")
def pretrained_vit(tmp_path_factory):
    """Run dir of a 4-step SimCLR run with a 2-block, 32-wide ViT, checkpointing only."""
    from ssl_lightning.train import train

    run = tmp_path_factory.mktemp("pretrained_vit")
    train(compose_config(run, *PRETRAIN, *TINY_VIT, "~callbacks.knn", "~callbacks.linear_probe",
                         "~callbacks.view_grid", "~callbacks.embedding_projector"))
    return run


def error_of(exc: BaseException) -> str:
    """The message of the ConfigError behind ``exc`` (Hydra wraps constructor errors in InstantiationException)."""
    while exc.__cause__ is not None and not isinstance(exc, ConfigError):
        exc = exc.__cause__
    return str(exc)


# -- GPU tests: collected everywhere (pytest -m gpu --collect-only lists them), skipped without CUDA ------------


def pytest_collection_modifyitems(config, items):
    import torch

    cuda = torch.cuda.device_count()
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        need = marker.kwargs.get("devices", 1)  # @pytest.mark.gpu(devices=2): NCCL tests need two GPUs
        if cuda < need:
            reason = "needs CUDA (no GPU visible)" if cuda == 0 else f"needs {need} GPUs, {cuda} visible"
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}; run `make gpu-check` on a GPU machine"))
