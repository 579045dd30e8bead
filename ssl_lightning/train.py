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
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ssl_lightning import cli, cluster, console, launch
from ssl_lightning.callbacks.nonfinite import NonFiniteLossError
from ssl_lightning.checkpoint import load_checkpoint
from ssl_lightning.config import ConfigError, check, config_dir, exit_on_config_error, find_config_error
from ssl_lightning.hparams import command_line_overrides, log_hparams, run_hparams
from ssl_lightning.reference import log_reference

log = logging.getLogger(__name__)
T = TypeVar("T")
cluster.register()  # hydra/launcher=submitit_slurm and hydra/sweeper=optuna follow the trainer and the objective


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


def check_length(cfg: DictConfig) -> None:
    """A run trains for at least one step: ``trainer.max_steps`` is -1 (no limit) or positive, and
    ``trainer.max_epochs`` is -1 (no limit, with max_steps) or positive (Lightning would exit 0 with no metrics)."""
    steps, epochs = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs")
    check(steps == -1 or (isinstance(steps, int) and steps > 0), "trainer.max_steps", steps,
          "a positive number of optimizer steps, or -1 for no limit (then trainer.max_epochs counts)")
    check(epochs is None or epochs == -1 or (isinstance(epochs, int) and epochs > 0), "trainer.max_epochs", epochs,
          "a positive number of epochs, or -1 for no limit (with trainer.max_steps)")
    check(not (epochs == -1 and steps == -1), "trainer.max_epochs", epochs,
          "a positive number of epochs when trainer.max_steps is -1 too (the run would never end)")


def check_batch_size(cfg: DictConfig, datamodule) -> None:
    """The batch size against the method's need, from the method's class when the method itself failed to build
    (so that a bad method value and a too-small batch are reported together)."""
    from hydra.utils import get_class

    try:
        need = getattr(get_class(cfg.method._target_), "min_batch_size", 1)
    except Exception:  # not a class we can import: the method's own error says why
        return
    if isinstance(need, int) and datamodule.batch_size < need:
        raise ConfigError(f"data.batch_size={datamodule.batch_size} is too small for {cfg.method._target_.rsplit('.', 1)[-1]}: "
                          f"it needs at least {need} images per device")


def check_compatible(method, datamodule, transform) -> None:
    """Checks that need the built objects: the method's view count (or, for methods that define
    ``check_views(view_sizes)``, its crop configuration) and batch-size needs."""
    views = getattr(transform, "num_views", None)
    need = getattr(method, "num_views", 2)
    if views is not None and need is not None and views != need:
        raise ConfigError(f"augment.views gives {views} views but method {type(method).__name__} needs {need}")
    if hasattr(method, "check_views") and hasattr(transform, "view_sizes"):
        method.check_views(transform.view_sizes)
    size = getattr(method.backbone, "image_size", None)  # a ViT is built for one image size
    if size is not None and getattr(datamodule, "image_size", size) != size:
        raise ConfigError(f"data.image_size={datamodule.image_size} is not allowed: the backbone (a ViT) is built for "
                          f"{size}x{size} images; leave its image size (backbone.image_size / backbone.img_size) at "
                          "${data.image_size}")
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
    problems.attempt(lambda: check_length(cfg))
    transform = problems.attempt(lambda: instantiate(cfg.augment)) if cfg.get("augment") else None
    datamodule = problems.attempt(lambda: instantiate(cfg.data, train_transform=transform))
    data_ok = datamodule is not None and problems.attempt(lambda: fill_from_data(cfg, datamodule) or True)
    # keys that only the data fills (a text vocabulary's size): without data, their error would be a knock-on one
    waits_for_data = not data_ok and any(cfg.backbone.get(k, 0) is None for k in DATA_FILLED_KEYS)
    backbone = None if waits_for_data else problems.attempt(lambda: instantiate(cfg.backbone))
    method = problems.attempt(lambda: instantiate(cfg.method, backbone=backbone)) if backbone is not None else None
    if method is None and datamodule is not None and cfg.get("method"):
        problems.attempt(lambda: check_batch_size(cfg, datamodule))
    callbacks = [problems.attempt(lambda c=c: instantiate(c)) for c in (cfg.get("callbacks") or {}).values() if c]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback with the bar off
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBarBase)]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if method is not None and datamodule is not None:
        problems.attempt(lambda: check_compatible(method, datamodule, transform))
    if method is not None and cfg.get("objective") is None:  # what a sweep optimises: the method's headline metric
        cfg.objective = getattr(method, "objective", "val/knn_top1")
    ckpt_path = problems.attempt(lambda: checkpoint_to_resume(cfg))
    problems.raise_if_any()
    return datamodule, method, callbacks, loggers, ckpt_path


DATA_FILLED_KEYS = ("vocab_size",)  # backbone keys that fill_from_data writes


def fill_from_data(cfg: DictConfig, datamodule) -> None:
    """Write what only the data knows (a text vocabulary's size: ``datamodule.backbone_args``) into the backbone
    keys left null, so the saved config rebuilds the model; a conflicting explicit value is an error."""
    for key, value in getattr(datamodule, "backbone_args", {}).items():
        if key not in cfg.backbone:
            continue  # not a backbone that takes it: the method names the mismatch
        if cfg.backbone[key] is not None and cfg.backbone[key] != value:
            raise ConfigError(f"backbone.{key}={cfg.backbone[key]} does not match the data's {value}: leave it null")
        cfg.backbone[key] = value


class _LastValidation(Callback):
    """Remembers the optimizer step of the last validation during fit, so a run can end evaluated."""

    step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


def evaluate_at_end(trainer: L.Trainer, method, datamodule, last: _LastValidation) -> None:
    """Run validation (kNN, linear probe, the method's validation step, reconstructions) once more at the end when
    the last one was before the final step: a ``trainer.max_steps`` run, or a schedule whose last epoch is not a
    multiple of ``trainer.check_val_every_n_epoch``. Every rank takes the same decision (global step, config)."""
    if trainer.global_step == 0 or last.step == trainer.global_step or trainer.limit_val_batches == 0:
        return
    if not hasattr(datamodule, "val_dataloader"):
        return
    train_metrics = dict(trainer.callback_metrics)
    trainer.validate(method, datamodule=datamodule, verbose=False)
    trainer.callback_metrics.update({k: v for k, v in train_metrics.items() if k not in trainer.callback_metrics})


def trainer_callbacks(cfg: DictConfig) -> list:
    """Callbacks a trainer preset brings (``trainer.callbacks``, e.g. the GPU preset's progress bar that redraws
    every 50 steps), after the run's own; a progress bar only while ``trainer.enable_progress_bar`` is on."""
    built = [instantiate(c) for c in cfg.trainer.get("callbacks") or []]
    return [c for c in built if cfg.trainer.get("enable_progress_bar", True) or not isinstance(c, ProgressBarBase)]


def train(cfg: DictConfig) -> dict[str, float]:
    """Build data, backbone, method, callbacks, loggers and trainer from ``cfg``, in that order, and fit; the run
    ends evaluated at its last step."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule, method, callbacks, loggers, ckpt_path = build(cfg)
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    method.run_config = resolved
    last_validation = _LastValidation()
    extra = trainer_callbacks(cfg)
    if any(isinstance(c, ProgressBarBase) for c in extra):  # the trainer preset's bar replaces the default one
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBarBase)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, *extra, last_validation], logger=loggers or False)

    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(resolved), out / "config.yaml")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    logged = set(trainer.logged_metrics)  # what fit logged (the final validation replaces logged_metrics)
    evaluate_at_end(trainer, method, datamodule, last_validation)
    logged |= set(trainer.logged_metrics)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    knn = next((cb for cb in trainer.callbacks if hasattr(cb, "history")), None)
    if knn is not None and knn.history:
        metrics["val/knn_top1_init"] = knn.history[0][1]
    log.debug("final metrics: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    log_reference(cfg.get("reference"), metrics)  # the preset's published number next to ours
    if trainer.is_global_zero:  # what `python -m ssl_lightning.summarize` reads for a sweep's table
        summary = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, "metrics": dict(sorted(metrics.items()))}
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        # TensorBoard's HPARAMS tab: this run's overrides against its final metrics
        log_hparams(loggers, run_hparams(cfg, command_line_overrides()), metrics, logged, trainer.global_step)
        report(cfg, metrics, trainer.global_step, trainer.current_epoch)
    return metrics


def report(cfg: DictConfig, metrics: dict[str, float], step: int, epoch: int) -> None:
    """The end of a run at the console (and in train.log): its directory, final metrics and next commands."""
    single = True
    overrides: list[str] = []
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        single = hc.mode != RunMode.MULTIRUN
        overrides = [o for o in hc.overrides.task if not o.startswith(("resume=", "hydra."))]
    latest = console.link_latest(cfg.paths.output_dir) if single else None
    log.info(console.final_report(cfg.paths.output_dir, metrics, step, epoch, overrides, latest, single))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    launch.install()  # trainer.devices=N under Hydra: each child rank runs this very job
    console.route_lightning_logs()
    console.quiet_known_noise(resuming=bool(cfg.get("resume") or cfg.get("ckpt_path")))
    try:
        with exit_on_config_error(on_exit=lambda: console.remove_if_empty(cfg.paths.output_dir)), launch.hydra_job():
            metrics = train(cfg)
    except NonFiniteLossError as e:
        print(f"Training stopped: {e}", file=sys.stderr, flush=True)
        launch.leave_after_rank0()  # every rank stops at this step; rank 0 must not be killed while it reports
        raise SystemExit(1) from None
    except SIGTERMException:
        print("Training interrupted; a checkpoint was saved: rerun with resume=auto and the same hydra.run.dir",
              file=sys.stderr, flush=True)
        launch.leave_after_rank0()
        raise SystemExit(143) from None
    return metrics.get(cfg.get("objective"))


def main() -> float | None:
    """``python -m ssl_lightning.train`` / ``ssl-train``: ``--help`` for people, the command line checked (every
    unknown option and key at once, with suggestions, before a run directory exists), then Hydra."""
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(cli.help_text())
        return None
    with exit_on_config_error():
        cli.check_command_line(sys.argv[1:])
    return hydra_main()


if __name__ == "__main__":
    main()
