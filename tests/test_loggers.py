"""logger=wandb (offline) and logger=mlflow (a local file: store) get what TensorBoard gets: the same scalars, the
resolved config as hyperparameters, and the image grids."""

from __future__ import annotations

import json

import pytest
from hydra.errors import InstantiationException

from ssl_lightning.config import ConfigError
from tests.conftest import error_of
from tests.methods.tensorboard import scalars

TINY_RUN = ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "data.num_samples=32", "data.batch_size=16",
            "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "callbacks.knn.k=5",
            "~callbacks.embedding_projector", "~callbacks.model_checkpoint"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One tiny SimCLR run logging to TensorBoard, W&B (offline) and MLflow (file: store) at once; the
    W&B run's ``log`` calls and config are captured in-process (its offline file is W&B's binary format)."""
    import wandb
    from wandb.sdk.wandb_run import Run

    from ssl_lightning.train import train
    from tests.conftest import compose_config

    run_dir = tmp_path_factory.mktemp("loggers")
    logged: list[dict] = []
    original = Run.log
    patch = pytest.MonkeyPatch()
    patch.setenv("WANDB_SILENT", "true")
    patch.setenv("WANDB_DIR", str(run_dir))
    patch.setattr(Run, "log", lambda self, data, *a, **k: (logged.append(dict(data)), original(self, data, *a, **k))[1])
    try:
        cfg = compose_config(run_dir, *TINY_RUN, "logger=[tensorboard,wandb,mlflow]", "logger.wandb.offline=true",
                             f"logger.mlflow.tracking_uri=file:{run_dir / 'mlruns'}")
        metrics = train(cfg)
        config = dict(wandb.run.config)
        wandb.finish()
    finally:
        patch.undo()
    return run_dir, metrics, logged, config


@pytest.mark.slow  # the shared run: about 30 s of CPU, W&B's service start-up included
def test_wandb_gets_the_scalars_config_and_images(logged_run):
    import wandb

    run_dir, metrics, logged, config = logged_run
    tensorboard = scalars(run_dir)
    sent = {k: v for entry in logged for k, v in entry.items()}  # the last value of each key
    assert set(tensorboard) <= set(sent)
    for key, value in metrics.items():
        if key in sent and not key.endswith("_init"):
            assert sent[key] == pytest.approx(value, rel=1e-6), key
    assert config["method"]["temperature"] == 0.1 and config["data"]["num_samples"] == 32
    assert config["objective"] == "val/knn_top1"
    assert isinstance(sent["train/views"][0], wandb.Image)
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))  # written for `wandb sync`


@pytest.mark.slow  # the shared run: about 30 s of CPU, W&B's service start-up included
def test_mlflow_gets_the_scalars_config_and_images(logged_run):
    from mlflow.tracking import MlflowClient

    run_dir, metrics, _, _ = logged_run
    client = MlflowClient(f"file:{run_dir / 'mlruns'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "ssl_lightning"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert set(scalars(run_dir)) <= set(run.data.metrics)
    for key, value in metrics.items():
        if key in run.data.metrics and not key.endswith("_init"):
            assert run.data.metrics[key] == pytest.approx(value, rel=1e-6), key
    params = run.data.params
    assert params["method/temperature"] == "0.1" and params["objective"] == "val/knn_top1"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "images/train/views")]
    assert artifacts == ["images/train/views/step_0000000.png"]


@pytest.mark.parametrize(("logger", "message"), [
    ("wandb", "logger=wandb needs the wandb package, which is not installed: pip install 'ssl_lightning[wandb]'"),
    ("mlflow", "logger=mlflow needs the mlflow package, which is not installed: pip install 'ssl_lightning[mlflow]'"),
])
def test_a_missing_extra_names_the_pip_command(make_cfg, monkeypatch, logger, message):
    from ssl_lightning import extras
    from ssl_lightning.train import train

    monkeypatch.setattr(extras, "is_installed", lambda module: False)
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(f"logger={logger}", "trainer.max_epochs=1"))
    assert error_of(info.value) == message


@pytest.mark.slow  # the shared run: about 30 s of CPU, W&B's service start-up included
def test_metrics_json_is_what_the_loggers_saw(logged_run):
    run_dir, metrics, _, _ = logged_run
    written = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert written == pytest.approx(metrics)
