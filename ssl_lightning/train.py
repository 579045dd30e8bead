"""Pretraining entry point.

    python -m ssl_lightning.train method=byol trainer.devices=8
    python -m ssl_lightning.train -m method=simclr method.temperature=0.1,0.2,0.5
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from ssl_lightning.config import ConfigError, config_dir

log = logging.getLogger(__name__)


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path=FILE`` resumes from FILE; ``resume=auto`` from this run dir's ``checkpoints/last.ckpt`` if
    it exists (so a requeued job with the same ``hydra.run.dir`` continues); ``resume=DIR`` from DIR's."""
    if cfg.get("ckpt_path"):
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r} is not a file: give a checkpoint written by a previous run")
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    if not resume:
        return None
    run_dir = Path(cfg.paths.output_dir) if resume == "auto" else Path(resume)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return str(last)
    if resume == "auto":
        log.info("resume=auto: no %s yet, starting from scratch", last)
        return None
    raise ConfigError(f"resume={resume!r} has no checkpoints/last.ckpt: give 'auto' or a run directory of a previous run")


def check_compatible(method, datamodule, transform) -> None:
    """Checks that need the built objects: the method's view count and batch-size needs."""
    views = getattr(transform, "num_views", None)
    need = getattr(method, "num_views", 2)
    if views is not None and need is not None and views != need:
        raise ConfigError(f"augment.views gives {views} views but method {type(method).__name__} needs {need}")
    if datamodule.batch_size < method.min_batch_size:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} is too small for {type(method).__name__}: "
            f"it needs at least {method.min_batch_size} images per device"
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Build data, backbone, method, callbacks, loggers and trainer from ``cfg``, in that order, and fit."""
    L.seed_everything(cfg.seed, workers=True)
    transform = instantiate(cfg.augment) if cfg.get("augment") else None
    datamodule = instantiate(cfg.data, train_transform=transform)
    backbone = instantiate(cfg.backbone)
    method = instantiate(cfg.method, backbone=backbone)
    check_compatible(method, datamodule, transform)
    ckpt_path = checkpoint_to_resume(cfg)
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    method.run_config = resolved

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), out / "config.yaml")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    knn = next((cb for cb in trainer.callbacks if hasattr(cb, "history")), None)
    if knn is not None and knn.history:
        metrics["val/knn_top1_init"] = knn.history[0][1]
    rank_zero_info("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    if trainer.is_global_zero:  # what `python -m ssl_lightning.summarize` reads for a sweep's table
        summary = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": dict(sorted(metrics.items()))}
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return metrics


def _config_error(exc: BaseException) -> ConfigError | None:
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except (ConfigError, InstantiationException) as e:
        error = _config_error(e)
        if error is None:
            raise
        raise SystemExit(f"Configuration error: {error}") from None
    return metrics.get(cfg.get("objective"))


if __name__ == "__main__":
    main()
