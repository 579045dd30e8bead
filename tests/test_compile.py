"""``method.compile`` compiles what the training step runs: dynamo captures graphs in every method's first
training step, and after one epoch (training steps, then validation) nothing compiles again: teachers,
no-grad and eval-mode calls have their graphs by then, and later steps reuse them. The ``eager`` backend
keeps it cheap (dynamo's capture without code generation); ``tests/gpu/test_steps.py`` runs inductor on CUDA."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from tests.method_steps import ALL_METHODS, method_overrides

# ViT and text methods are quick to trace; a ResNet-18 takes dynamo about 10 s a variant on a 2-core CPU
FAST = {"mae", "beit", "mocov3_vit", "clm"}
RECORDS: list[tuple[str, int, int]] = []  # (event, global step, graphs compiled so far)


class GraphCount(L.Callback):
    """Records how many graphs dynamo has compiled after each training step and each validation."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        RECORDS.append(("train", trainer.global_step, counters["stats"]["unique_graphs"]))

    def on_validation_end(self, trainer, pl_module):
        RECORDS.append(("val", trainer.global_step, counters["stats"]["unique_graphs"]))


def graphs_per_step(make_cfg, corpus, method: str, backend: str, *extra: str) -> list[tuple[str, int, int]]:
    """Two epochs of 3 steps with a validation after each, under ``method.compile=<backend>``."""
    from ssl_lightning.train import train

    torch._dynamo.reset()  # the caches are per code object: start from none
    counters.clear()
    RECORDS.clear()
    cfg = make_cfg(*method_overrides(method, corpus), f"method.compile={backend}", "trainer.max_epochs=2",
                   "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
                   "+callbacks.graphs._target_=tests.test_compile.GraphCount", *extra)
    train(cfg)
    assert [e for e, _, _ in RECORDS] == ["train"] * 3 + ["val"] + ["train"] * 3 + ["val"]
    return list(RECORDS)


@pytest.mark.parametrize("method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in ALL_METHODS])
def test_training_step_is_compiled_once(make_cfg, tiny_corpus, method):
    records = graphs_per_step(make_cfg, tiny_corpus, method, "eager")
    first_step, first_epoch, end = records[0][2], records[3][2], records[-1][2]
    assert first_step >= (2 if method == "mae" else 1)  # MAE: encoder token path and decoder (0 before)
    assert end == first_epoch, f"recompiled after warm-up: {records}"
    assert not counters["graph_break"], dict(counters["graph_break"])  # each compiled network is one graph


def test_compile_refuses_an_unknown_backend(make_cfg):
    from ssl_lightning.train import build
    from ssl_lightning.config import ConfigError

    with pytest.raises(ConfigError, match="method.compile='nope' is not allowed: true, false or a torch.compile backend name"):
        build(make_cfg("method=simclr", "method.compile=nope"))
