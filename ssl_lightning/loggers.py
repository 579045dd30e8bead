"""Experiment trackers beside TensorBoard (the default): ``logger=wandb``, ``logger=mlflow``.

Each is Lightning's logger, built after checking that its optional extra is installed. They get what TensorBoard
gets: every scalar the methods and callbacks log (Lightning's ``self.log``), the resolved run config as
hyperparameters (``train()`` calls ``log_hyperparams`` on every logger), and the image grids (views,
reconstructions) through :func:`ssl_lightning.callbacks.images.log_image`: W&B as ``wandb.Image`` media,
MLflow as PNG artifacts under ``images/``.
"""

from __future__ import annotations

import os
from typing import Any

from ssl_lightning.extras import require


def wandb(project: str = "ssl_lightning", name: str | None = None, save_dir: str = ".", offline: bool = False,
          entity: str | None = None, group: str | None = None, tags: list[str] | None = None,
          log_model: bool = False, **kwargs: Any):
    """Lightning's ``WandbLogger``; ``offline=true`` writes the run under ``save_dir/wandb`` for ``wandb sync``."""
    require("wandb")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project=project, name=name, save_dir=save_dir, offline=offline, entity=entity, group=group,
                       tags=list(tags) if tags else None, log_model=log_model, **kwargs)


def mlflow(experiment_name: str = "ssl_lightning", run_name: str | None = None, tracking_uri: str | None = None,
           tags: dict[str, Any] | None = None, log_model: bool = False, **kwargs: Any):
    """Lightning's ``MLFlowLogger``. A ``file:`` tracking URI is a local directory store; MLflow 3 keeps that
    store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which choosing a ``file:`` URI here sets."""
    require("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri and tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                        tags=dict(tags) if tags else None, log_model=log_model, **kwargs)
