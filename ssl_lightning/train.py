"""Pretraining entry point.

    python -m ssl_lightning.train method=byol trainer.devices=8
    python -m ssl_lightning.train -m method=simclr method.temperature=0.1,0.2,0.5
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ssl_lightning import launch
from ssl_lightning.callbacks.nonfinite import NonFiniteLossError
from ssl_lightning.checkpoint import load_checkpoint
from ssl_lightning.config import ConfigError, check, config_dir, exit_on_config_error, find_config_error
from ssl_lightning.hparams import command_line_overrides, log_hparams, run_hparams

log = logging.getLogger(__name__)
T = TypeVar("T")


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path=FILE`` resumes from FILE; ``resume=auto`` from this run dir's ``checkpoints/last.ckpt`` if
    it exists (so a requeued job with the same ``hydra.run.dir`` continues); ``resume=DIR`` from DIR's.
    The file is checked first: loaded with ``weights_only=True`` and refused unless ssl_lightning wrote it."""
    if cfg.get("ckpt_path"):
        load_checkpoint(cfg.ckpt_path, "ckpt_path")
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    if not resume:
        return None
    run_dir = Path(cfg.paths.output_dir) if resume == "auto" else Path(resume)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        load_checkpoint(last, "resume")
        return str(last)
    if resume == "auto":
        log.info("resume=auto: no %s yet, starting from scratch", last)
        return None
    raise ConfigError(f"resume={resume!r} has no checkpoints/last.ckpt: give 'auto' or a run directory of a previous run")


def check_trainer(cfg: DictConfig) -> None:
    """Lightning's ``trainer.sync_batchnorm`` swaps in ``torch.nn.SyncBatchNorm``, which runs on CUDA only;
    ``method.sync_batchnorm`` (ssl_lightning's SyncBatchNorm) works with gloo on CPU and NCCL on GPUs."""
    on_cpu = cfg.trainer.get("accelerator") == "cpu" or not torch.cuda.is_available()
    check(not (cfg.trainer.get("sync_batchnorm") and on_cpu), "trainer.sync_batchnorm", True,
          "false on CPU (torch's SyncBatchNorm runs on CUDA only): set method.sync_batchnorm=true instead, "
          "which works with gloo on CPU and NCCL on GPUs")


def check_compatible(method, datamodule, transform) -> None:
    """Checks that need the built objects: the method's view count (or, for methods that define
    ``check_views(view_sizes)``, its crop configuration) and batch-size needs."""
    views = getattr(transform, "num_views", None)
    need = getattr(method, "num_views", 2)
    if views is not None and need is not None and views != need:
        raise ConfigError(f"augment.views gives {views} views but method {type(method).__name__} needs {need}")
    if hasattr(method, "check_views") and hasattr(transform, "view_sizes"):
        method.check_views(transform.view_sizes)
    if datamodule.batch_size < method.min_batch_size:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} is too small for {type(method).__name__}: "
            f"it needs at least {method.min_batch_size} images per device"
        )


class _Problems:
    """Collects configuration errors so that start-up reports every problem at once, one line each."""

    def __init__(self):
        self.messages: list[str] = []

    def attempt(self, build: Callable[[], T]) -> T | None:
        try:
            return build()
        except (ConfigError, InstantiationException) as e:
            error = find_config_error(e)
            if error is None:
                raise
            self.messages.append(str(error))
            return None

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            raise ConfigError(f"{len(self.messages)} problems:\n" + "\n".join(f"  - {m}" for m in self.messages))


def build(cfg: DictConfig):
    """Instantiate augmentation, data, backbone, method, callbacks and loggers, validating everything
    before any training starts; all problems are reported together."""
    problems = _Problems()
    problems.attempt(lambda: check_trainer(cfg))
    transform = problems.attempt(lambda: instantiate(cfg.augment)) if cfg.get("augment") else None
    datamodule = problems.attempt(lambda: instantiate(cfg.data, train_transform=transform))
    if datamodule is not None:
        problems.attempt(lambda: fill_from_data(cfg, datamodule))
    backbone = problems.attempt(lambda: instantiate(cfg.backbone))
    method = problems.attempt(lambda: instantiate(cfg.method, backbone=backbone)) if backbone is not None else None
    callbacks = [problems.attempt(lambda c=c: instantiate(c)) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if method is not None and datamodule is not None:
        problems.attempt(lambda: check_compatible(method, datamodule, transform))
    if method is not None and cfg.get("objective") is None:  # what a sweep optimises: the method's headline metric
        cfg.objective = getattr(method, "objective", "val/knn_top1")
    ckpt_path = problems.attempt(lambda: checkpoint_to_resume(cfg))
    problems.raise_if_any()
    return datamodule, method, callbacks, loggers, ckpt_path


def fill_from_data(cfg: DictConfig, datamodule) -> None:
    """Write what only the data knows (a text vocabulary's size: ``datamodule.backbone_args``) into the backbone
    keys left null, so the saved config rebuilds the model; a conflicting explicit value is an error."""
    for key, value in getattr(datamodule, "backbone_args", {}).items():
        if key not in cfg.backbone:
            continue  # not a backbone that takes it: the method names the mismatch
        if cfg.backbone[key] is not None and cfg.backbone[key] != value:
            raise ConfigError(f"backbone.{key}={cfg.backbone[key]} does not match the data's {value}: leave it null")
        cfg.backbone[key] = value


def train(cfg: DictConfig) -> dict[str, float]:
    """Build data, backbone, method, callbacks, loggers and trainer from ``cfg``, in that order, and fit."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, method, callbacks, loggers, ckpt_path = build(cfg)
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    method.run_config = resolved
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), out / "config.yaml")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    knn = next((cb for cb in trainer.callbacks if hasattr(cb, "history")), None)
    if knn is not None and knn.history:
        metrics["val/knn_top1_init"] = knn.history[0][1]
    rank_zero_info("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    if trainer.is_global_zero:  # what `python -m ssl_lightning.summarize` reads for a sweep's table
        summary = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": dict(sorted(metrics.items()))}
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        # TensorBoard's HPARAMS tab: this run's overrides against its final metrics
        log_hparams(loggers, run_hparams(cfg, command_line_overrides()), metrics, trainer.logged_metrics, trainer.global_step)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    launch.install()  # trainer.devices=N under Hydra: each child rank runs this very job
    try:
        with exit_on_config_error(), launch.hydra_job():
            metrics = train(cfg)
    except NonFiniteLossError as e:
        raise SystemExit(f"Training stopped: {e}") from None
    except SIGTERMException:
        print("Training interrupted; a checkpoint was saved: rerun with resume=auto and the same hydra.run.dir",
              file=sys.stderr)
        raise SystemExit(143) from None
    return metrics.get(cfg.get("objective"))


if __name__ == "__main__":
    main()
