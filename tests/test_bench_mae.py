"""The MAE benchmark runs and compares every mask ratio with the full encoding (no timing assertions)."""

from hydra import compose, initialize_config_dir

from ssl_lightning.bench_mae import bench
from ssl_lightning.config import config_dir


def test_bench_reports_each_ratio_against_the_full_encoding(tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("bench_mae", overrides=[
            f"paths.output_dir={tmp_path}", "backbone.depth=1", "backbone.embed_dim=32", "backbone.num_heads=2",
            "method.decoder_dim=32", "method.decoder_depth=1", "method.decoder_num_heads=2", "bench.batch_size=4",
            "bench.warmup=1", "bench.steps=1", "bench.rounds=1"])
    rows = bench(cfg)
    assert [(r["mask_ratio"], r["visible"]) for r in rows] == [(0.0, 64), (0.5, 32), (0.75, 16), (0.9, 6)]
    assert rows[0]["ratio"] == 1.0 and all(r["ms"] > 0 for r in rows)
