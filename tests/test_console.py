"""The console a person meets: --help, every bad override reported at once with suggestions, no empty run folder
after a configuration error, and a run that ends evaluated, with its directory, metrics and next commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ssl_lightning.cli import check_command_line, help_text, split_overrides
from ssl_lightning.config import ConfigError
from ssl_lightning.console import final_report, format_metrics, link_latest, quiet_known_noise, remove_if_empty
from ssl_lightning.optim import warmup_cosine

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["data=synthetic", "data.num_samples=32", "data.image_size=8", "data.batch_size=8",
            "method.proj_hidden_dim=32", "method.proj_output_dim=16", "~callbacks.view_grid",
            "~callbacks.embedding_projector", "trainer.enable_model_summary=false"]


def run_train(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "ssl_lightning.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# -- --help and the command-line check ------------------------------------------------------------------


def test_help_describes_train_with_examples_and_its_own_groups():
    text = help_text()
    assert "Examples:" in text and "python -m ssl_lightning.train experiment=moco_digits" in text
    assert "method     [simclr]" in text and "mocov3" in text and "trainer.check_val_every_n_epoch" in text
    assert "protocol" not in text  # eval's group, not train's


@pytest.mark.parametrize("args, expected", [
    (["method=simclrr"], "method=simclrr: no such option; did you mean simclr?"),
    (["method.temprature=0.1"], "method.temprature=0.1: 'method' has no key 'temprature': did you mean method.temperature?"),
    (["trainer.max_step=3"], "did you mean trainer.max_steps"),
    (["~callbacks.knnn"], "~callbacks.knnn: 'callbacks' has no key 'knnn': did you mean callbacks.knn?"),
    (["-m", "method=simclr,byolx"], "method=byolx: no such option; did you mean byol or byol_40ep"),
    (["foo=1"], "there is no top-level key 'foo' (add a new key with +foo=1)"),
    (["logger=[tensorboard,wandbb]"], "logger=wandbb: no such option; did you mean wandb?"),
])
def test_a_bad_override_names_itself_and_its_closest_matches(args, expected):
    with pytest.raises(ConfigError) as error:
        check_command_line(args)
    assert expected in str(error.value)


def test_every_bad_override_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        check_command_line(["method=byol", "method.temprature=0.1", "data.batch_sise=3", "backbone=resnet19"])
    message = str(error.value)
    assert message.startswith("3 problems:")
    assert "data.batch_size" in message and "resnet18" in message and "method.temperature" not in message  # byol has none
    assert "'method' has no key 'temprature'" in message


@pytest.mark.parametrize("args", [
    ["experiment=moco_digits", "method.queue_size=64"],           # a key the preset's method has
    ["-m", "method.temperature=0.1,0.2", "~callbacks.knn", "+extra=1", "hydra.run.dir=x"],
    ["method=clm", "data.path=corpus.txt", "--cfg", "job"],
    ["callbacks=none", "logger=csv"],
    ["logger=[tensorboard,csv]", "backbone=timm", "backbone.name=convnext_atto", "hydra/launcher=submitit_slurm"],
])
def test_good_command_lines_pass(args):
    check_command_line(args)


def test_flags_and_their_values_are_not_overrides():
    assert split_overrides(["-m", "--cfg", "job", "a=1", "--info", "config", "b=2"]) == ["a=1", "b=2"]
    assert split_overrides(["--config-name", "other", "a=1"]) is None  # another config: not ours to check


def test_unknown_option_gets_one_short_message_and_no_run_dir(tmp_path):
    result = run_train("method=simclrr", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "Configuration error: method=simclrr: no such option; did you mean simclr?" in result.stderr
    assert "Config search path" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_help_flag_prints_help(tmp_path):
    result = run_train("--help", cwd=tmp_path)
    assert result.returncode == 0 and "Configuration groups" in result.stdout


# -- configuration problems found while building ---------------------------------------------------------


def test_bad_value_and_small_batch_are_reported_together_and_leave_no_run_dir(tmp_path):
    run = tmp_path / "run"
    result = run_train("method.temperature=0", "data.batch_size=1", "data=synthetic", f"hydra.run.dir={run}",
                       cwd=tmp_path)
    assert result.returncode == 1
    assert "2 problems" in result.stderr, result.stderr[-2000:]
    assert "method.temperature=0" in result.stderr and "data.batch_size=1 is too small" in result.stderr
    assert not run.exists()


def test_missing_corpus_is_one_problem_without_knock_on_errors(make_cfg):
    from ssl_lightning.train import build

    with pytest.raises(ConfigError) as error:
        build(make_cfg("method=clm", "data=text", "data.path=/nonexistent/corpus.txt", tiny=False))
    assert "data.path" in str(error.value) and "vocab_size" not in str(error.value)


@pytest.mark.parametrize("override, key", [("trainer.max_steps=0", "trainer.max_steps=0"),
                                           ("trainer.max_epochs=0", "trainer.max_epochs=0")])
def test_a_run_without_steps_is_refused(make_cfg, override, key):
    from ssl_lightning.train import build

    with pytest.raises(ConfigError, match=key):
        build(make_cfg(override))


def test_remove_if_empty_never_removes_a_run_with_results(tmp_path):
    empty = tmp_path / "empty"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text("a: 1\n")
    (empty / "train.log").write_text("")
    assert remove_if_empty(empty) and not empty.exists()
    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "train.log").write_text("")
    assert not remove_if_empty(kept) and (kept / "checkpoints").exists()


def test_short_run_warns_that_it_ends_inside_its_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.warns(UserWarning, match=r"this run \(5 optimizer steps\) is shorter than its warm-up \(100 steps\)"):
        warmup_cosine(optimizer, total_steps=5, steps_per_epoch=10, warmup_epochs=10)


def test_known_noise_is_filtered_and_the_rest_is_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise(resuming=True)
        warnings.warn("It is recommended to use `self.log('val/knn_top1', ..., sync_dist=True)` when logging")
        warnings.warn("Checkpoint directory /x exists and is not empty.")
        warnings.warn("It is recommended to use `self.log('val/loss', ..., sync_dist=True)` when logging")
    assert [str(w.message) for w in caught] == ["It is recommended to use `self.log('val/loss', ..., sync_dist=True)` when logging"]


# -- the end of a run --------------------------------------------------------------------------------------


def test_link_latest_points_at_the_newest_run(tmp_path):
    root = tmp_path / "outputs"
    first, second = root / "a" / "1", root / "a" / "2"
    first.mkdir(parents=True), second.mkdir(parents=True)
    link_latest(first, root)
    link = link_latest(second, root)
    assert link == root.resolve() / "latest" and (root / "latest").resolve() == second.resolve()
    assert os.readlink(root / "latest") == os.path.join("a", "2")  # relative: the tree can move
    assert link_latest(tmp_path / "elsewhere", root) is None


def test_final_report_shows_metrics_and_next_commands(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("")
    metrics = {"val/knn_top1": 90.5, "val/knn_top1_init": 85.5, "train/loss": 1.25, "train/lr": 0.1}
    assert format_metrics(metrics) == "val/knn_top1 90.5 (at initialisation 85.5), train/loss 1.25"
    text = final_report(tmp_path, metrics, 10, 2, ["method=moco", "data=cifar10"])
    assert f"Run directory: {tmp_path}" in text
    assert f"python -m ssl_lightning.eval ckpt={tmp_path}/checkpoints/last.ckpt protocol=linear data=cifar10" in text
    assert f"resume=auto hydra.run.dir={tmp_path}" in text and "tensorboard --logdir" in text


def test_a_short_run_ends_evaluated_and_says_where_it_is(tmp_path):
    result = run_train(*TINY_RUN, "trainer.max_steps=2", "trainer.log_every_n_steps=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    latest = tmp_path / "outputs" / "latest"
    assert latest.is_symlink() and (latest / "config.yaml").exists()
    metrics = json.loads((latest / "metrics.json").read_text())["metrics"]
    assert "val/knn_top1" in metrics and "val/linear_top1" in metrics  # evaluated at step 2, not at epoch 5
    assert "Run directory: outputs/" in result.stdout and "(also outputs/latest)" in result.stdout
    assert "python -m ssl_lightning.eval ckpt=outputs/" in result.stdout
    assert "img/s=" in result.stdout and "lr=" in result.stdout  # the progress bar
    log = (latest / "train.log").read_text()
    assert "Seed set to 0" in log and "Final metrics at step 2" in log  # Lightning's lines and ours
    assert "Tip:" not in result.stdout + result.stderr and "LeafSpec" not in result.stderr
    assert "limit_train_batches" not in result.stdout
