"""TensorBoard's HPARAMS tab: a sweep's runs record their overrides with their final metrics."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from ssl_lightning.hparams import run_hparams
from tests.test_plot import TINY, hydra_main


def hparams_of(run_dir) -> tuple[dict, list[str], EventAccumulator]:
    """(session hparams, experiment metric tags, accumulator) read back from the run's event files (TensorBoard
    reads a directory's files as one run)."""
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in session.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos], acc


def test_a_sweep_job_records_its_overrides_and_final_metrics(tmp_path):
    hydra_main(["-m", "method.temperature=0.3", "method=simclr", *TINY, "trainer.max_epochs=1",
                f"hydra.sweep.dir={tmp_path}"])
    params, metric_tags, acc = hparams_of(tmp_path / "0")
    assert params["method.temperature"] == pytest.approx(0.3) and params["method"] == "simclr"
    assert params["seed"] == 0 and params["data.num_samples"] == 32 and params["callbacks.view_grid"] == "(deleted)"
    assert not any(k.startswith("hydra") for k in params)
    assert {"val/knn_top1", "val/linear_top1", "train/loss", "val/knn_top1_init"} <= set(metric_tags)
    # every metric of the tab has a scalar to read; the curves are not given an extra point at step 0
    assert set(metric_tags) <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("train/loss")) == 2  # the 2 steps, nothing more
    knn_steps = [e.step for e in acc.Scalars("val/knn_top1")]
    assert knn_steps[0] == 0 and len(knn_steps) == 2  # the random initialisation and the one validation
    assert [e.step for e in acc.Scalars("val/knn_top1_init")] == [2]  # written once, at the last step


def test_hparams_resolve_values_and_skip_output_paths():
    cfg = OmegaConf.create({"seed": 3, "method": {"temperature": 0.2, "name": "x"}, "paths": {"output_dir": "o"}})
    overrides = ["method.temperature=0.2", "method=simclr", "paths.output_dir=o", "hydra.run.dir=o", "+extra=1"]
    assert run_hparams(cfg, overrides) == {"method.temperature": 0.2, "method": "simclr", "extra": "1", "seed": 3}
