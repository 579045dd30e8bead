"""Pictures of runs: accuracy, loss and collapse signals over training, and a sweep's metric against its value.

    python -m ssl_lightning.plot outputs/DATE/TIME                         # one run
    python -m ssl_lightning.plot outputs/2026-12-01/10-00-00 outputs/2026-12-01/11-00-00 out=plots
    python -m ssl_lightning.plot outputs/multirun/DATE/TIME                # a sweep: its runs and sweep_*.png

Each argument without ``=`` is a run directory or a sweep directory (its numbered job directories are the
runs). A run's scalars are read from its TensorBoard event files, or from the CSV logger's ``metrics.csv``
(``logger=csv``) where it has no events. Writes, each only when some run logged what it shows:

- ``accuracy.png``: ``val/knn_top1`` (solid; the point at step 0 is the random initialisation) and
  ``val/linear_top1`` (dashed) of every run on one axis, by training step;
- ``loss.png``: ``train/loss`` (and ``val/loss``, dashed, for the language and MIM methods);
- ``collapse.png``: ``train/rank`` (effective rank) and ``train/z_std`` (spread of the normalised embeddings);
- ``sweep_<key>.png`` for each sweep directory and each numeric override that varies between its runs: the
  final ``metric`` (default: ``val/knn_top1``, else ``val/loss``) against the swept value.

Runs are labelled by the overrides that differ between them (else by their directory). Options:
``out=DIR`` (default: ``plots/`` in the first directory given), ``metric=KEY`` (the sweep plot's metric),
``labels=A,B,...`` (one name per run, in the order given, instead of the overrides).
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ssl_lightning.config import ConfigError, exit_on_config_error
from ssl_lightning.summarize import find_runs, is_run, read_run

OPTIONS = ("out", "metric", "labels")
Series = list[tuple[int, float]]  # (step, value), by step


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    final: dict[str, float]  # metrics.json (or the last scalars)
    scalars: dict[str, Series] = field(default_factory=dict)
    label: str = ""


def tensorboard_series(run: Path) -> dict[str, Series]:
    """Every scalar of a run's TensorBoard event files, ``{tag: [(step, value), ...]}``; a step written twice
    (a resumed run) keeps its latest value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for events in sorted(run.rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            points = latest.setdefault(tag, {})
            for e in acc.Scalars(tag):
                if e.step not in points or e.wall_time >= points[e.step][0]:
                    points[e.step] = (e.wall_time, e.value)
    return {tag: sorted((s, v) for s, (_, v) in points.items()) for tag, points in latest.items()}


def csv_series(run: Path) -> dict[str, Series]:
    """Every metric column of the CSV logger's ``metrics.csv`` files, by ``step``."""
    series: dict[str, dict[int, float]] = {}
    for file in sorted(run.rglob("metrics.csv")):
        with open(file, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("step"):
                    continue
                step = int(float(row["step"]))
                for key, value in row.items():
                    if key not in ("step", "epoch") and value not in (None, ""):
                        series.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def read(path: Path) -> Run:
    info = read_run(path)
    scalars = tensorboard_series(path) or csv_series(path)
    return Run(path, info["overrides"], {k: v for k, v in info["metrics"].items() if isinstance(v, (int, float))}, scalars)


# Overrides that change how a run looks on the console, not what it learns: left out of the labels.
COSMETIC = ("enable_progress_bar", "enable_model_summary", "num_workers", "log_every_n_steps")


def label_runs(runs: list[Run]) -> None:
    """Label each run by the overrides that differ between the runs (or, failing that, its directory)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1
               and k.split(".")[-1] not in COSMETIC and "(deleted)" not in {r.overrides.get(k) for r in runs}]
    for r in runs:
        parts = [f"{k.split('.')[-1]}={r.overrides[k]}" for k in varying if k in r.overrides]
        r.label = " ".join(parts) if parts and len(runs) > 1 else "/".join(r.path.parts[-2:])
    if len({r.label for r in runs}) < len(runs):  # same overrides in different places
        for r in runs:
            r.label = f"{'/'.join(r.path.parts[-2:])} {r.label}".strip()


def figure(rows: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.6 * rows), squeeze=False)
    return plt, fig, [a[0] for a in axes]


def save(plt, fig, axes, path: Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(runs: list[Run], panels: list[tuple[str, list[tuple[str, str]]]], path: Path) -> Path | None:
    """One panel per ``(y label, [(tag, line style), ...])``; one colour per run. None when nothing to draw."""
    panels = [(y, tags) for y, tags in panels if any(r.scalars.get(t) for r in runs for t, _ in tags)]
    if not panels:
        return None
    plt, fig, axes = figure(len(panels))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (ylabel, tags) in zip(axes, panels):
        for i, r in enumerate(runs):
            for tag, style in tags:
                points = r.scalars.get(tag)
                if points:
                    steps, values = zip(*points)
                    name = r.label if len(tags) == 1 else f"{r.label}: {tag}"
                    ax.plot(steps, values, style, color=colours[i % len(colours)], label=name,
                            marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
    return save(plt, fig, axes, path)


def numeric(value: str | None) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def plot_sweeps(runs: list[Run], metric: str, out: Path, name: str) -> list[Path]:
    """``sweep_<key>.png`` for each numeric override that varies between ``runs``: final ``metric`` vs value."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    written = []
    for key in keys:
        values = [numeric(r.overrides.get(key)) for r in runs]
        if None in values or len(set(values)) < 2:
            continue
        points = sorted((x, r.final[metric]) for x, r in zip(values, runs) if metric in r.final)
        if not points:
            continue
        plt, fig, axes = figure()
        xs, ys = zip(*points)
        axes[0].plot(xs, ys, "o-")
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            axes[0].set_xscale("log")
        axes[0].set_xlabel(key)
        axes[0].set_ylabel(f"final {metric}")
        axes[0].set_title(name, fontsize=9)
        written.append(save(plt, fig, axes, out / f"sweep_{key.replace('/', '_')}.png"))
    return written


def plot(paths: list[Path], out: Path | None = None, metric: str | None = None,
         labels: list[str] | None = None) -> list[Path]:
    """Read the runs under ``paths`` and write the figures into ``out``; returns the files written. ``labels``
    names the runs in order (a sweep directory counts one per job) instead of their differing overrides."""
    groups = [(p, [read(r) for r in find_runs(p)]) for p in paths]
    runs = [r for _, rs in groups for r in rs]
    if not any(r.scalars for r in runs):
        raise ConfigError(f"no TensorBoard events or metrics.csv under {', '.join(map(str, paths))}: nothing to plot")
    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"labels={','.join(labels)} is not allowed: give one label per run, {len(runs)} in all "
                          f"({', '.join(str(r.path) for r in runs)})")
    if labels is None:
        label_runs(runs)
    for r, name in zip(runs, labels or []):
        r.label = name
    out = out or paths[0] / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_curves(runs, [("accuracy (%)", [("val/knn_top1", "-"), ("val/linear_top1", "--")])], out / "accuracy.png"),
        plot_curves(runs, [("loss", [("train/loss", "-"), ("val/loss", "--")])], out / "loss.png"),
        plot_curves(runs, [("effective rank", [("train/rank", "-")]), ("z std", [("train/z_std", "-")])],
                    out / "collapse.png"),
    ]
    for path, sweep_runs in groups:
        if is_run(path) or len(sweep_runs) < 2:
            continue
        have = {k for r in sweep_runs for k in r.final}
        chosen = metric or next((m for m in ("val/knn_top1", "val/loss") if m in have), None)
        if chosen is None or chosen not in have:
            raise ConfigError(f"metric={chosen!r} is not allowed: one of {sorted(have)}")
        written += plot_sweeps(sweep_runs, chosen, out, str(path))
    return [w for w in written if w is not None]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    with exit_on_config_error():
        paths = [Path(a) for a in argv if "=" not in a]
        options = dict(a.split("=", 1) for a in argv if "=" in a)
        unknown = [k for k in options if k not in OPTIONS]
        if unknown:
            raise ConfigError(f"{unknown[0]}={options[unknown[0]]} is not allowed: options are {', '.join(OPTIONS)}")
        if not paths:
            raise ConfigError("give a run or sweep directory: python -m ssl_lightning.plot outputs/DATE/TIME")
        labels = options["labels"].split(",") if "labels" in options else None
        written = plot(paths, Path(options["out"]) if "out" in options else None, options.get("metric"), labels)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
