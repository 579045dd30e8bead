"""hydra/launcher=submitit_slurm follows the trainer; hydra/sweeper=optuna searches on tiny data on CPU; summarize
reads the search like a grid sweep and plots the objective against the swept parameter."""

from __future__ import annotations

import csv
import json
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import ssl_lightning.train  # noqa: F401  (registers the launcher and sweeper nodes, as the entry point does)
from ssl_lightning import cluster, extras
from ssl_lightning.config import config_dir


def compose_with_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides], return_hydra_config=True)


def test_slurm_jobs_follow_the_trainers_devices_and_nodes(monkeypatch, tmp_path):
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    cfg = compose_with_hydra("hydra/launcher=submitit_slurm", "trainer=gpu", "trainer.devices=8", "trainer.num_nodes=2",
                             "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=720",
                             "hydra.launcher.cpus_per_task=10")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 8, 8)

    # what SLURM receives: the parameters through submitit as SlurmLauncher.launch passes them
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    generic = {"nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "timeout_min", "mem_gb", "name",
               "stderr_to_stdout"}
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in launcher.items()
                                  if k not in ("_target_", "submitit_folder", "max_num_timeout") and v is not None
                                  and v != {}})
    sbatch = executor._executor._make_submission_file_text("python -m ssl_lightning.train", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=720", "#SBATCH --cpus-per-task=10"):
        assert line in sbatch, line


def test_optuna_direction_follows_the_objective():
    assert compose_with_hydra("hydra/sweeper=optuna").hydra.sweeper.direction == "maximize"  # val/knn_top1
    assert compose_with_hydra("hydra/sweeper=optuna", "method=clm").hydra.sweeper.direction == "minimize"  # val/loss
    assert compose_with_hydra("hydra/sweeper=optuna", "objective=train/loss").hydra.sweeper.direction == "minimize"


@pytest.mark.parametrize(("group", "message"), [
    ("hydra/launcher=submitit_slurm", "hydra/launcher=submitit_slurm needs the Hydra plugin hydra_submitit_launcher, "
                                      "which is not installed: pip install 'ssl_lightning[cluster]'"),
    ("hydra/sweeper=optuna", "hydra/sweeper=optuna needs the Hydra plugin hydra_optuna_sweeper, which is not "
                             "installed: pip install 'ssl_lightning[cluster]'"),
])
def test_a_missing_plugin_names_the_pip_command(monkeypatch, group, message):
    monkeypatch.setattr(extras, "is_installed", lambda module: False)
    monkeypatch.setattr(cluster, "is_installed", lambda module: False)
    try:
        cluster.register()
        cfg = compose_with_hydra(group)
        node = cfg.hydra.launcher if "launcher" in group else cfg.hydra.sweeper
        with pytest.raises(Exception) as info:
            OmegaConf.to_container(node, resolve=True)
        assert message in str(info.value)
    finally:
        monkeypatch.undo()
        cluster.register()


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory):
    """A 3-trial Optuna search over the SimCLR temperature, each trial 2 steps on tiny synthetic data."""
    from ssl_lightning.train import main

    sweep_dir = tmp_path_factory.mktemp("optuna")
    argv = ["train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
            "method.temperature=interval(0.05, 0.5)", "data=synthetic", "data.num_samples=32", "data.batch_size=16",
            "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
            "method.proj_hidden_dim=32", "method.proj_output_dim=16", "callbacks.knn.k=5",
            "~callbacks.model_checkpoint", "~callbacks.view_grid", "~callbacks.embedding_projector",
            "~callbacks.collapse", f"hydra.sweep.dir={sweep_dir}"]
    old_argv, sys.argv = sys.argv, argv
    GlobalHydra.instance().clear()
    try:
        main()
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()
    return sweep_dir


@pytest.mark.slow  # the 3 trials: about 30 s of CPU
def test_optuna_runs_three_trials_and_keeps_the_best(optuna_sweep):
    knn, temperatures = [], []
    for trial in range(3):
        written = json.loads((optuna_sweep / str(trial) / "metrics.json").read_text())["metrics"]
        config = OmegaConf.load(optuna_sweep / str(trial) / "config.yaml")
        knn.append(written["val/knn_top1"])
        temperatures.append(config.method.temperature)
        assert config.objective == "val/knn_top1"
    assert all(0.05 <= t <= 0.5 for t in temperatures) and len(set(temperatures)) == 3
    best = OmegaConf.load(optuna_sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(knn))
    assert best.best_params["method.temperature"] == pytest.approx(temperatures[knn.index(max(knn))])


@pytest.mark.slow  # shares the 3-trial search
def test_summarize_reads_the_search_and_plots_the_objective(optuna_sweep, capsys):
    from ssl_lightning.summarize import main as summarize

    summarize([str(optuna_sweep)])
    printed = capsys.readouterr().out
    assert printed.startswith("3 runs") and "Optuna best: " in printed
    with open(optuna_sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(float(r["method.temperature"]) > 0 for r in rows)
    png = optuna_sweep / "objective.png"
    assert f"Plot: {png}" in printed
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert (height, width) == (384, 480)  # one panel: method.temperature
