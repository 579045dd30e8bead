"""What a sweep optimised, against each parameter it varied: ``objective.png`` next to ``summary.csv``.

``python -m ssl_lightning.summarize SWEEP_DIR`` calls :func:`plot_objective` for grid sweeps (``-m a=1,2,3``) and
Optuna searches (``hydra/sweeper=optuna``) alike: one panel per swept numeric parameter, each run a point
(the best one ringed), the x axis logarithmic when the values span a factor of 10 or more. The objective is the
runs' ``objective`` (``config.yaml``; by default the method's headline metric); :func:`read_optuna` reads the
sweeper's ``optimization_results.yaml`` (best parameters and value) when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

DEFAULT_OBJECTIVE = "val/knn_top1"


def read_optuna(sweep: Path) -> dict[str, Any] | None:
    """``{"best_params": {...}, "best_value": x}`` of an Optuna sweep directory, else None."""
    file = sweep / "optimization_results.yaml"
    if not file.is_file():
        return None
    results = OmegaConf.to_container(OmegaConf.load(file)) or {}
    return results if isinstance(results, dict) else None


def run_objective(run: Path) -> tuple[str, bool]:
    """(metric, maximise?) of a run, from its saved config (``objective``) or the default."""
    objective = None
    config = run / "config.yaml"
    if config.is_file():
        objective = OmegaConf.load(config).get("objective")
    objective = objective or DEFAULT_OBJECTIVE
    return objective, "loss" not in objective.rsplit("/", 1)[-1]


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_objective(runs: list[dict[str, Any]], out: Path) -> Path | None:
    """Write the objective-vs-parameter figure of ``runs`` (summarize's rows) to ``out``; None when no swept
    parameter is numeric or no run has the objective."""
    if not runs:
        return None
    objective, maximise = run_objective(Path(runs[0]["path"]))
    scored = [r for r in runs if as_float(r["metrics"].get(objective)) is not None]
    keys = list(dict.fromkeys(k for r in runs for k in r["overrides"]))
    swept = [k for k in keys if len({r["overrides"].get(k) for r in scored}) > 1
             and all(as_float(r["overrides"].get(k)) is not None for r in scored)]
    if not scored or not swept:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [float(r["metrics"][objective]) for r in scored]
    best = (max if maximise else min)(range(len(values)), key=values.__getitem__)
    fig, axes = plt.subplots(1, len(swept), figsize=(4 * len(swept), 3.2), squeeze=False, constrained_layout=True)
    for ax, key in zip(axes[0], swept):
        xs = [float(r["overrides"][key]) for r in scored]
        ax.scatter(xs, values, s=24, zorder=2)
        ax.scatter([xs[best]], [values[best]], s=120, facecolors="none", edgecolors="C3", zorder=3, label="best")
        if min(xs) > 0 and max(xs) >= 10 * min(xs):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{objective} ({'higher' if maximise else 'lower'} is better), {len(scored)} runs", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
