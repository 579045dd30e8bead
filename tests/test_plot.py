"""python -m ssl_lightning.plot on a real (tiny) Hydra sweep: the figures exist and show what the runs logged."""

from __future__ import annotations

import sys

import matplotlib.image
import pytest
from hydra.core.global_hydra import GlobalHydra

from ssl_lightning.plot import csv_series, main, plot, read, tensorboard_series


def hydra_main(argv: list[str]) -> None:
    from ssl_lightning.train import main as train_main

    old_argv, sys.argv = sys.argv, ["train", *argv]
    GlobalHydra.instance().clear()
    try:
        train_main()
    finally:
        sys.argv = old_argv
        GlobalHydra.instance().clear()


TINY = ["data=synthetic", "data.num_samples=32", "data.batch_size=16", "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "method.proj_hidden_dim=64",
        "method.proj_output_dim=32", "callbacks.knn.k=10", "~callbacks.model_checkpoint", "~callbacks.view_grid",
        "~callbacks.embedding_projector"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2-run temperature sweep, 2 epochs of 2 steps each, kNN / linear probe / collapse every epoch."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    hydra_main(["-m", "method.temperature=0.1,0.5", *TINY, f"hydra.sweep.dir={sweep_dir}"])
    return sweep_dir


def test_reads_every_logged_curve(sweep):
    run = read(sweep / "0")
    assert run.overrides["method.temperature"] == "0.1"
    knn = run.scalars["val/knn_top1"]
    steps = [s for s, _ in knn]
    assert steps[0] == 0 and len(steps) == 3 and steps == sorted(set(steps))  # the random init, then each epoch
    assert all(0 <= v <= 100 for _, v in knn)
    assert len(run.scalars["train/loss"]) == 4 and len(run.scalars["val/linear_top1"]) == 2
    assert len(run.scalars["train/rank"]) == 2
    assert run.final["val/knn_top1"] == pytest.approx(knn[-1][1])


def test_writes_the_figures_for_a_sweep(sweep, tmp_path, capsys):
    main([str(sweep), f"out={tmp_path}"])
    printed = capsys.readouterr().out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["accuracy.png", "collapse.png", "loss.png", "sweep_method.temperature.png"]
    for name in names:
        assert f"wrote {tmp_path / name}" in printed
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0.01  # a real picture, not blank


def test_default_output_is_inside_the_first_directory(sweep):
    written = plot([sweep / "1"])
    assert {p.name for p in written} == {"accuracy.png", "collapse.png", "loss.png"}
    assert all(p.parent == sweep / "1" / "plots" for p in written)


def test_csv_logs_plot_like_tensorboard(tmp_path):
    hydra_main([*TINY, "logger=csv", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"])
    run_dir = tmp_path / "run"
    assert not tensorboard_series(run_dir)
    series = csv_series(run_dir)
    assert len(series["val/knn_top1"]) == 2 and series["val/knn_top1"][0][0] == 0 and len(series["train/loss"]) == 2
    assert {p.name for p in plot([run_dir], tmp_path / "figs")} == {"accuracy.png", "loss.png", "collapse.png"}


@pytest.mark.parametrize(("argv", "message"), [
    ([], None),
    (["colour=red", "x"], "Configuration error: colour=red is not allowed: options are out, metric, labels"),
    (["/no/such/dir"], "Configuration error: '/no/such/dir' is not a directory"),
])
def test_arguments(argv, message, capsys):
    if message is None:
        main(argv)
        assert "python -m ssl_lightning.plot" in capsys.readouterr().out
        return
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert str(info.value).startswith(message)


def test_labels_name_what_differs_and_skip_cosmetic_overrides(tmp_path):
    from ssl_lightning.plot import Run, label_runs

    runs = [Run(tmp_path / "0", {"method.temperature": "0.1", "data.num_workers": "0", "seed": "1"}, {}),
            Run(tmp_path / "1", {"method.temperature": "0.5", "data.num_workers": "2", "seed": "1"}, {})]
    label_runs(runs)
    assert [r.label for r in runs] == ["temperature=0.1", "temperature=0.5"]


def test_labels_given_name_the_runs_in_order(sweep, tmp_path, monkeypatch):
    import matplotlib.axes

    seen, draw = [], matplotlib.axes.Axes.plot

    def plot_and_record(self, *args, label=None, **kwargs):
        seen.append(label)
        return draw(self, *args, label=label, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot_and_record)
    plot([sweep], tmp_path / "named", labels=["cold", "warm"])
    assert {"cold", "warm"} <= set(seen) and not any("temperature" in str(name) for name in seen)
    with pytest.raises(SystemExit, match="labels=only-one is not allowed: give one label per run, 2 in all"):
        main([str(sweep), "labels=only-one", f"out={tmp_path / 'x'}"])
