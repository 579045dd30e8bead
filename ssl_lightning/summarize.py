"""One row per run of a sweep: its overrides and final metrics, as a table and a CSV file.

    python -m ssl_lightning.summarize outputs/multirun/DATE/TIME
    python -m ssl_lightning.summarize outputs/multirun/DATE/TIME sort=val/knn_top1 out=temperature.csv
    python -m ssl_lightning.summarize outputs/multirun/DATE/TIME metrics=val/knn_top1,val/linear_top1

Each argument without ``=`` is a sweep directory (its numbered job directories are the runs) or a run
directory. A run's overrides come from Hydra's ``.hydra/overrides.yaml``; its metrics from the
``metrics.json`` that ``ssl_lightning.train`` writes when it ends (or the ``results.json`` of
``ssl_lightning.eval``), else from the last value of each scalar in its TensorBoard event files (a run that
stopped early: status ``partial``). The printed table shows the overrides that differ between runs (the
common ones are listed above it); the CSV (``out=FILE``, by default ``summary.csv`` in the sweep
directory) has every override, metric, the status and the run directory.

Options: ``out=FILE``, ``sort=KEY`` (a metric: losses, perplexities and errors lowest first, other metrics
highest first; default: the job order),
``metrics=A,B`` (the metric columns of the printed table; default: all).

An Optuna search (``hydra/sweeper=optuna``) reads like a grid sweep (its trials are the numbered jobs); its
best parameters and value (``optimization_results.yaml``) are printed below the table. For both, the objective
against each swept numeric parameter is plotted to ``objective.png`` next to the CSV
(:mod:`ssl_lightning.objective_plot`).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_lightning.config import ConfigError, exit_on_config_error
from ssl_lightning.objective_plot import plot_objective, read_optuna
from ssl_lightning.reference import summary_column
from ssl_lightning.table import format_table

OPTIONS = ("out", "sort", "metrics")


def is_run(path: Path) -> bool:
    return (path / ".hydra" / "overrides.yaml").is_file() or (path / "metrics.json").is_file() or (path / "results.json").is_file()


def find_runs(path: Path) -> list[Path]:
    """``path`` itself if it is a run, else its run subdirectories in job order (0, 1, 2, ..., 10)."""
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a directory: give a sweep directory such as outputs/multirun/DATE/TIME")
    if is_run(path):
        return [path]
    runs = [p for p in path.iterdir() if p.is_dir() and is_run(p)]
    if not runs:
        raise ConfigError(f"{str(path)!r} holds no runs (no subdirectory with .hydra/overrides.yaml or metrics.json)")
    return sorted(runs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def read_overrides(run: Path) -> dict[str, str]:
    """``key=value`` overrides of a run as ``{key: value}`` (``+key`` as ``key``, ``~key`` as ``key: (deleted)``)."""
    file = run / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    overrides: dict[str, str] = {}
    for item in OmegaConf.to_container(OmegaConf.load(file)) or []:
        item = str(item)
        if item.startswith("~"):
            overrides[item[1:].split("=", 1)[0]] = "(deleted)"
            continue
        key, _, value = item.partition("=")
        overrides[key.lstrip("+")] = value
    return overrides


def tensorboard_scalars(run: Path) -> dict[str, float]:
    """Last value of every scalar in a run's TensorBoard event files (the latest write wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last: dict[str, tuple[float, int, float]] = {}
    for events in sorted(run.rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            event = acc.Scalars(tag)[-1]
            if tag not in last or (event.wall_time, event.step) >= last[tag][:2]:
                last[tag] = (event.wall_time, event.step, event.value)
    return {tag: value for tag, (_, _, value) in last.items()}


def read_run(run: Path) -> dict[str, Any]:
    """``{"run", "path", "status", "overrides", "metrics"}`` of one run directory."""
    row: dict[str, Any] = {"run": run.name, "path": str(run), "overrides": read_overrides(run)}
    for name in ("metrics.json", "results.json"):
        file = run / name
        if file.is_file():
            data = json.loads(file.read_text())
            metrics = dict(data.get("metrics", {}))
            if "global_step" in data:
                metrics["step"] = data["global_step"]
            return {**row, "status": "ok", "metrics": metrics}
    scalars = tensorboard_scalars(run)
    return {**row, "status": "partial" if scalars else "failed", "metrics": scalars}


def metric_order(key: str) -> tuple[int, str]:
    """val/ and eval metrics first, then train/, then the rest; alphabetical within each."""
    for rank, prefix in enumerate(("val/", "knn_", "linear_", "finetune_", "train/", "step")):
        if key.startswith(prefix):
            return rank, key
    return 6, key


def lower_is_better(metric: str) -> bool:
    """Losses, perplexities and errors sort lowest first; accuracies and everything else highest first."""
    return any(word in metric.rsplit("/", 1)[-1] for word in ("loss", "ppl", "perplexity", "error"))


def summarize(paths: list[Path], out: Path | None = None, sort: str | None = None,
              metrics: list[str] | None = None) -> tuple[str, Path, list[dict[str, Any]]]:
    """Read every run under ``paths``; write the CSV; return (printed text, CSV path, rows)."""
    runs = [read_run(r) for p in paths for r in find_runs(p)]
    for r in runs:  # the preset's published number next to ours (ssl_lightning.reference)
        r["reference"] = summary_column(Path(r["path"]), r["metrics"])
    keys = list(dict.fromkeys(k for r in runs for k in r["overrides"]))
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1]
    common = [f"{k}={runs[0]['overrides'][k]}" for k in keys if k not in varying]
    metric_keys = sorted({k for r in runs for k in r["metrics"]}, key=metric_order)
    if sort is not None:
        if sort not in metric_keys and sort not in keys:
            raise ConfigError(f"sort={sort!r} is not allowed: one of {metric_keys + keys}")
        numeric = sort in metric_keys

        sign = 1 if lower_is_better(sort) else -1

        def sort_key(r):
            value = r["metrics"].get(sort) if numeric else r["overrides"].get(sort)
            return (value is None, sign * value if numeric and value is not None else value or "")

        runs.sort(key=sort_key)
    shown = metric_keys
    if metrics:
        unknown = [m for m in metrics if m not in metric_keys]
        if unknown:
            raise ConfigError(f"metrics={','.join(metrics)} is not allowed: {unknown} are not among {metric_keys}")
        shown = metrics

    def row(r: dict[str, Any], columns_overrides: list[str], columns_metrics: list[str]) -> dict[str, Any]:
        return {"run": r["run"], **{k: r["overrides"].get(k) for k in columns_overrides},
                **{k: r["metrics"].get(k) for k in columns_metrics}, "status": r["status"]}

    reference = ["reference"] if any(r["reference"] for r in runs) else []
    table = format_table([{**row(r, varying, shown), "reference": r["reference"]} for r in runs],
                         ["run", *varying, *shown, "status", *reference])
    text = f"{len(runs)} runs" + (f"; common overrides: {' '.join(common)}" if common else "") + "\n" + table

    out = out or ((paths[0] if len(paths) == 1 and not is_run(paths[0]) else Path(".")) / "summary.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", *keys, *metric_keys, "status", "path"])
        writer.writeheader()
        for r in runs:
            writer.writerow({**row(r, keys, metric_keys), "path": r["path"]})
    optuna = read_optuna(paths[0]) if len(paths) == 1 and paths[0].is_dir() else None
    if optuna is not None:
        text += f"\nOptuna best: {optuna.get('best_value')} with {optuna.get('best_params')}"
    png = plot_objective(runs, out.with_name("objective.png"))
    if png is not None:
        text += f"\nPlot: {png}"
    return text, out, runs


def parse(argv: list[str]) -> tuple[list[Path], dict[str, str]]:
    paths = [Path(a) for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = [k for k in options if k not in OPTIONS]
    if unknown:
        raise ConfigError(f"{unknown[0]}={options[unknown[0]]} is not allowed: options are {', '.join(OPTIONS)}")
    if not paths:
        raise ConfigError("give a sweep directory: python -m ssl_lightning.summarize outputs/multirun/DATE/TIME")
    return paths, options


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    with exit_on_config_error():
        paths, options = parse(argv)
        metrics = [m for m in options.get("metrics", "").split(",") if m] or None
        text, csv_path, _ = summarize(paths, Path(options["out"]) if "out" in options else None, options.get("sort"), metrics)
    print(text + f"\n\nCSV: {csv_path}")


if __name__ == "__main__":
    main()
