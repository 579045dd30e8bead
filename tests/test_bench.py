"""The benchmarks run and report what they promise (no timing assertions): the one entry point's modes, the step
benchmark's rows, and MAE's comparison of every mask ratio with the full encoding."""

import pytest
from hydra import compose, initialize_config_dir

from ssl_lightning.bench.__main__ import split_mode
from ssl_lightning.bench.mae import bench
from ssl_lightning.config import config_dir
from tests.methods.test_training import SMALL_HEADS


@pytest.mark.parametrize("argv, expected", [
    ([], ("steps", [])),
    (["seed=1"], ("steps", ["seed=1"])),
    (["steps", "seed=1"], ("steps", ["seed=1"])),
    (["data", "seed=1"], ("steps", ["mode=data", "seed=1"])),
    (["--data", "seed=1"], ("steps", ["mode=data", "seed=1"])),
    (["mae", "bench.steps=2"], ("mae", ["bench.steps=2"])),
    (["text"], ("text", [])),
    (["moco", "steps=2"], ("moco", ["steps=2"])),
    (["logging", "values=2"], ("logging", ["values=2"])),
])
def test_one_entry_point_picks_the_benchmark(argv, expected):
    assert split_mode(argv) == expected


@pytest.mark.parametrize("method", ["moco"])  # EMA and queue in both loops
def test_bench_rows(tmp_path, method):
    from ssl_lightning.bench.steps import bench_method

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("bench", overrides=[f"method={method}", f"paths.output_dir={tmp_path}", "data=synthetic",
                                          "data.image_size=8", "data.batch_size=4", *SMALL_HEADS[method]])
    row = bench_method(cfg, warmup=1, steps=1)
    assert row["unit"] == "img" and row["batch"] == 4 and row["ours"] > 0 and row["plain"] > 0 and row["mem_ours"] > 0


def test_bench_rows_with_the_device_augmentation(tmp_path, monkeypatch):
    """data.gpu_augment: the pre-made batches hold (uint8 crops, params) per view; both loops turn them into
    views inside the step, as training does."""
    from ssl_lightning.bench import steps
    from ssl_lightning.transforms import batched

    calls = []
    device_views = batched.DeviceViews.__call__
    monkeypatch.setattr(batched.DeviceViews, "__call__", lambda self, views: calls.append(1) or device_views(self, views))
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("bench", overrides=["method=simclr", f"paths.output_dir={tmp_path}", "data=synthetic",
                                          "data.gpu_augment=true", "data.image_size=8", "data.batch_size=4",
                                          *SMALL_HEADS["simclr"]])
    row = steps.bench_method(cfg, warmup=1, steps=1)
    assert row["unit"] == "img" and row["batch"] == 4 and row["ours"] > 0 and row["plain"] > 0
    assert len(calls) == 4  # 2 steps in each loop


def test_bench_reports_each_ratio_against_the_full_encoding(tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("bench_mae", overrides=[
            f"paths.output_dir={tmp_path}", "backbone.depth=1", "backbone.embed_dim=32", "backbone.num_heads=2",
            "method.decoder_dim=32", "method.decoder_depth=1", "method.decoder_num_heads=2", "bench.batch_size=4",
            "bench.warmup=1", "bench.steps=1", "bench.rounds=1"])
    rows = bench(cfg)
    assert [(r["mask_ratio"], r["visible"]) for r in rows] == [(0.0, 64), (0.5, 32), (0.75, 16), (0.9, 6)]
    assert rows[0]["ratio"] == 1.0 and all(r["ms"] > 0 for r in rows)


def test_moco_bench_times_both_shuffle_bn_paths_on_the_same_numbers():
    from ssl_lightning.bench.moco import Settings
    from ssl_lightning.bench.moco import bench as bench_moco

    row = bench_moco(Settings(batch_size=8, image_size=8, bn_splits=4, steps=1, rounds=1))
    assert row["before_ms"] > 0 and row["after_ms"] > 0
    assert row["loss_diff"] < 1e-4  # one call per view computes what one call per group did


def test_logging_bench_prints_the_three_loops(monkeypatch, capsys):
    import sys

    from ssl_lightning.bench.logcost import main

    monkeypatch.setattr(sys, "argv", ["bench", "values=2", "steps=60", "rounds=1", "every=5"])
    main()
    out = capsys.readouterr().out
    assert "no self.log (floor)" in out and "self.log x 2 every step" in out and "log_step x 2 (every 5)" in out
