"""Per-step values are logged only on the steps something reads them (a logger writes, the epoch ends, the
progress bar refreshes): what the logger writes is identical to logging every step, with fewer ``self.log``
calls (each costs about 0.2 ms of host time)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import lightning as L
import pytest

import ssl_lightning.callbacks.steps
import ssl_lightning.methods.base
from ssl_lightning.callbacks.steps import step_logged
from ssl_lightning.train import build, train
from tests.conftest import compose_config

USERS = (ssl_lightning.callbacks.steps, ssl_lightning.methods.base)  # where step_logged is looked up


def fake_trainer(step: int, every: int, ready: int, last: bool = False, bar_rate: int | None = None):
    bar = None if bar_rate is None else SimpleNamespace(is_enabled=True, refresh_rate=bar_rate)
    progress = SimpleNamespace(is_last_batch=last, current=SimpleNamespace(ready=ready))
    return SimpleNamespace(
        fast_dev_run=False, progress_bar_callback=bar, num_training_batches=100, max_steps=-1, global_step=step,
        _logger_connector=SimpleNamespace(should_update_logs=(step + 1) % every == 0),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))


def test_the_decision():
    assert step_logged(fake_trainer(step=9, every=10, ready=3))                 # the logger writes step 10
    assert not step_logged(fake_trainer(step=8, every=10, ready=2))
    assert step_logged(fake_trainer(step=8, every=10, ready=2, last=True))     # the epoch's last batch
    assert step_logged(fake_trainer(step=8, every=10, ready=4, bar_rate=2), prog_bar=True)  # the bar refreshes
    assert not step_logged(fake_trainer(step=8, every=10, ready=4, bar_rate=2))  # ... for prog_bar values only
    assert not step_logged(fake_trainer(step=8, every=10, ready=3, bar_rate=2), prog_bar=True)
    assert step_logged(SimpleNamespace())  # outside a fit loop: always
    quiet = vars(fake_trainer(step=8, every=10, ready=2))
    assert step_logged(SimpleNamespace(**{**quiet, "max_steps": 9}))  # the run's last step
    assert step_logged(SimpleNamespace(**{**quiet, "num_training_batches": 2}))  # the epoch's last batch (a limit)


def dino_run(tmp_path, monkeypatch, log_all: bool) -> tuple[dict, int]:
    calls, log = [], L.LightningModule.log

    def counted_log(self, name, *args, **kwargs):
        calls.append(name)
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counted_log)
    if log_all:
        for module in USERS:
            monkeypatch.setattr(module, "step_logged", lambda *a, **k: True)
    cfg = compose_config(tmp_path, "method=dino", "+backbone.depth=1", "+backbone.embed_dim=32", "+backbone.num_heads=2",
                         "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16", "data.num_samples=40",
                         "data.batch_size=8", "trainer.max_epochs=2", "trainer.log_every_n_steps=3", "logger=csv",
                         "callbacks.knn.k=5", "~callbacks.view_grid", "~callbacks.embedding_projector",
                         "method.scheduler.warmup_epochs=1", "method.warmup_teacher_temp_epochs=1")
    train(cfg)
    rows = {}
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            step = rows.setdefault(row["step"], {})
            step.update({k: v for k, v in row.items() if v not in ("", None) and k != "epoch"})
    return rows, sum(name.startswith("train/") for name in calls)


def test_the_logger_writes_the_same_values_with_fewer_log_calls(tmp_path, monkeypatch):
    skipped, calls_skipped = dino_run(tmp_path / "skip", monkeypatch, log_all=False)
    monkeypatch.undo()
    every, calls_every = dino_run(tmp_path / "every", monkeypatch, log_all=True)
    assert skipped == every  # the same steps and values: steps 3, 6, 9 and the epochs' last batches (5, 10)
    assert {"2", "5", "8"} <= set(skipped) and "train/teacher_entropy" in skipped["2"] and "train/tau" in skipped["2"]
    assert calls_skipped < 0.6 * calls_every, (calls_skipped, calls_every)


@pytest.mark.parametrize("refresh_rate", [1, 3])
def test_the_progress_bar_still_shows_the_current_loss(tmp_path, refresh_rate):
    """With the bar on, ``train/loss`` is logged on each step the bar refreshes, so it shows that step's loss."""
    shown = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (batch_idx + 1) % refresh_rate == 0:
                shown.append((float(trainer.progress_bar_metrics["train/loss"]), float(outputs["loss"])))

    cfg = compose_config(tmp_path, "method=simclr", "data.num_samples=48", "data.batch_size=8", "trainer.max_epochs=1",
                         "trainer.log_every_n_steps=50", "trainer.enable_progress_bar=true",
                         f"callbacks.progress_bar.refresh_rate={refresh_rate}", "method.proj_hidden_dim=32",
                         "method.proj_output_dim=16", "callbacks.knn.k=5", "~callbacks.view_grid",
                         "~callbacks.embedding_projector", "trainer.limit_val_batches=0")
    datamodule, method, callbacks, loggers, _ = build(cfg)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, log_every_n_steps=50,
                        callbacks=[c for c in callbacks if type(c).__name__ == "ProgressBar"] + [Watch()])
    trainer.fit(method, datamodule=datamodule)
    assert len(shown) == 6 // refresh_rate and all(bar == pytest.approx(loss, rel=1e-5) for bar, loss in shown)
