"""A run's hyperparameters and final metrics for TensorBoard's HPARAMS tab.

The tab compares runs by the hyperparameters each recorded and the metrics it reached. What a sweep varies is
what the user typed: the run's command-line overrides (``method.temperature=0.1``, ``method=byol``) plus the
seed. They are recorded once, at the end of the run, with the names of the final metrics; TensorBoard reads
each metric's value from the run's own scalars of that name (a final metric that was never logged as a scalar,
such as ``val/knn_top1_init``, is written once at the last step).

Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` would also re-log every metric at step 0,
putting the final value at the start of every curve; so the summaries are written to the logger's writer
directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

Scalar = int | float | str | bool


def command_line_overrides() -> list[str]:
    """This Hydra job's overrides (in a multirun: this job's values), or [] outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def run_hparams(cfg: DictConfig, overrides: Iterable[str]) -> dict[str, Scalar]:
    """``{key: value}`` for each ``key=value`` override that is not about where outputs go (``hydra.*``,
    ``paths.*``), with the config's resolved value where it is a scalar (``method=byol`` stays ``byol``), plus
    ``seed``. ``~key`` deletions are recorded as ``(deleted)``."""
    params: dict[str, Scalar] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~")
        if key.split(".")[0] in ("hydra", "paths"):
            continue
        if deleted:
            params[key] = "(deleted)"
            continue
        resolved = OmegaConf.select(cfg, key, default=None)
        params[key] = resolved if isinstance(resolved, (int, float, str, bool)) else value
    params.setdefault("seed", int(cfg.get("seed", 0)))
    return params


def log_hparams(loggers: Iterable[Any], params: Mapping[str, Scalar], metrics: Mapping[str, float],
                logged: Iterable[str], step: int) -> None:
    """Write ``params`` with the names of ``metrics`` to every TensorBoard logger (call on rank 0 only).
    ``logged``: the metric names already logged as scalars; the others are written at ``step``."""
    from torch.utils.tensorboard.summary import hparams

    logged = set(logged)
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        writer = logger.experiment
        for name, value in metrics.items():
            if name not in logged:
                writer.add_scalar(name, value, step)
        experiment, session_start, session_end = hparams(dict(params), dict(metrics))
        for summary in (experiment, session_start, session_end):
            writer._get_file_writer().add_summary(summary)  # reopened if the end-of-run validation closed it
        writer.flush()
