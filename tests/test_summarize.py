"""python -m ssl_lightning.summarize: one row per run of a real (tiny) Hydra sweep."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from ssl_lightning.config import ConfigError
from ssl_lightning.summarize import main as summarize_main
from ssl_lightning.summarize import summarize


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2-run temperature sweep through Hydra's multirun (in this process), 2 steps per run."""
    from ssl_lightning.train import main

    sweep_dir = tmp_path_factory.mktemp("sweep")
    argv = ["train", "-m", "method.temperature=0.1,0.5", "data=synthetic", "data.num_samples=32", "data.batch_size=16",
            "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "method.proj_hidden_dim=64",
            "method.proj_output_dim=32", "callbacks.knn.k=10", "~callbacks.model_checkpoint", "~callbacks.view_grid",
            "~callbacks.embedding_projector", f"hydra.sweep.dir={sweep_dir}"]
    old_argv, sys.argv = sys.argv, argv
    GlobalHydra.instance().clear()
    try:
        main()
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()
    return sweep_dir


def test_lists_both_runs_with_their_overrides(sweep, capsys):
    summarize_main([str(sweep)])
    printed = capsys.readouterr().out
    assert printed.startswith("2 runs; common overrides: data=synthetic data.num_samples=32")
    header, rule, first, second = printed.split("\n\n")[0].splitlines()[1:5]
    assert "method.temperature" in header and "val/knn_top1" in header and "train/loss" in header
    assert first.startswith("| 0   | 0.1 ") and second.startswith("| 1   | 0.5 ")
    assert first.rstrip().endswith("| ok     |")

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method.temperature"] for r in rows] == ["0.1", "0.5"]
    for job, row in enumerate(rows):
        written = json.loads((sweep / str(job) / "metrics.json").read_text())  # what train() wrote at the end
        assert written["global_step"] == 2 and float(row["step"]) == 2
        assert float(row["val/knn_top1"]) == pytest.approx(written["metrics"]["val/knn_top1"])
        assert row["data"] == "synthetic" and row["status"] == "ok"


def test_sort_and_metric_selection(sweep, tmp_path):
    text, out, runs = summarize([sweep], out=tmp_path / "t.csv", sort="train/loss", metrics=["train/loss"])
    losses = [r["metrics"]["train/loss"] for r in runs]
    assert losses == sorted(losses) and len(set(losses)) > 1 and out.is_file()  # a loss: lowest first
    assert "val/knn_top1" not in text.splitlines()[1]
    _, _, runs = summarize([sweep], out=tmp_path / "k.csv", sort="val/knn_top1")
    accuracies = [r["metrics"]["val/knn_top1"] for r in runs]
    assert accuracies == sorted(accuracies, reverse=True)  # an accuracy: highest first


def test_a_run_without_metrics_json_falls_back_to_tensorboard(sweep, tmp_path):
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    (copy / "1" / "metrics.json").unlink()  # as if the job had been killed before the end
    _, _, runs = summarize([copy])
    assert [r["status"] for r in runs] == ["ok", "partial"]
    original = json.loads((sweep / "1" / "metrics.json").read_text())["metrics"]
    for key in ("val/knn_top1", "train/loss"):  # the last logged values are the final ones
        assert runs[1]["metrics"][key] == pytest.approx(original[key], rel=1e-5), key


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="is not a directory"):
        summarize([tmp_path / "nope"])
    with pytest.raises(ConfigError, match="holds no runs"):
        summarize([tmp_path])
    with pytest.raises(SystemExit, match="Configuration error: colour=red is not allowed: options are out, sort, metrics"):
        summarize_main([str(tmp_path), "colour=red"])
