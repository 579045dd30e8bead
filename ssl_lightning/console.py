"""What a person sees at the console and finds in the run directory.

- Lightning's own messages go through the handlers Hydra set up, so ``<run dir>/train.log`` keeps the whole console
  log (Lightning otherwise installs a handler of its own and stops propagation, which left ``train.log`` empty).
- Messages a user cannot act on are dropped (:func:`quiet_known_noise`; each is listed there with the reason).
- At the end of a run: the run directory, the final metrics and the next commands (:func:`final_report`), and
  ``outputs/latest`` pointing at the run (:func:`link_latest`); after a sweep, the sweep directory and its summary
  command (:class:`SweepReport`, a Hydra callback).
- A run that failed on a configuration error leaves no empty run directory behind (:func:`remove_if_empty`).
"""

from __future__ import annotations

import logging
import os
import shlex
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback

log = logging.getLogger(__name__)

# Keys that callbacks log after gathering over all ranks themselves: Lightning's "use sync_dist=True" hint does
# not apply to them (averaging identical values would only cost a collective).
GATHERED_KEYS = ("val/knn_top1", "val/knn_top5", "val/linear_top1", "train/z_std", "train/rank")

# What a single run's console shows of its final metrics (all of them are in metrics.json)
SHOWN_PREFIXES = ("val/", "eval/")
SHOWN_KEYS = ("train/loss",)


class _DropKnownNoise(logging.Filter):
    """Lightning log lines a user cannot act on:

    - "Tip: try installing litmodels / litlogger": adverts for cloud products;
    - "The following callbacks returned in ``LightningModule.configure_callbacks`` will override existing
      callbacks": a method returns the update rules it cannot run without (EMA, queue), and the final
      ``trainer.validate`` of a run attaches them a second time; they are the same callbacks.
    """

    PREFIXES = ("\N{ELECTRIC LIGHT BULB} Tip",
                "The following callbacks returned in `LightningModule.configure_callbacks` will override")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def route_lightning_logs() -> None:
    """Let ``lightning.pytorch`` / ``lightning.fabric`` log through the root handlers (console and ``train.log``).

    Lightning adds its own stream handler and turns propagation off when it is imported before logging is
    configured, which Hydra does only when the job starts. Nothing changes when the root logger has no handlers
    (``train`` called from Python without Hydra), so Lightning's messages are never silenced.
    """
    root = logging.getLogger()
    if not root.handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    for handler in root.handlers:
        if not any(isinstance(f, _DropKnownNoise) for f in handler.filters):
            handler.addFilter(_DropKnownNoise())
    logging.captureWarnings(True)  # Lightning's warnings into train.log too


def quiet_known_noise(resuming: bool) -> None:
    """Filter the warnings that are known to be harmless here and that a user cannot act on:

    - Lightning's adverts and its note on re-attached method callbacks (:class:`_DropKnownNoise`);
    - ``isinstance(treespec, LeafSpec)`` is deprecated: raised inside Lightning's own pytree helper by newer torch;
    - "Checkpoint directory ... exists and is not empty", when resuming: the directory is this run's own;
    - "It is recommended to use ``self.log(KEY, ..., sync_dist=True)``" for :data:`GATHERED_KEYS`, which the
      callbacks compute from features gathered over every rank (the value is already identical on all ranks).

    The ``Trainer(limit_*_batches=1.0) was configured ...`` lines are not filtered: they are avoided at the source
    (``conf/trainer/default.yaml`` leaves the limits null unless set).
    """
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    keys = "|".join(k.replace("/", r"\/") for k in GATHERED_KEYS)
    warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('({keys})'")
    if resuming:
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def shown_path(path: Path | str) -> str:
    """``path`` relative to the working directory where it lies inside it (what a user types next), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _unresolved(link: Path) -> str:
    """A symbolic link's own path as the user types it (relative to the working directory where possible)."""
    try:
        return str(Path(os.path.abspath(link)).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(link)


def link_latest(target: Path | str, root: Path | str = "outputs") -> Path | None:
    """Point ``<root>/latest`` at ``target`` (a run or sweep directory inside ``root``), replacing it atomically.

    Returns the link, or None when ``target`` lies outside ``root`` (a custom ``hydra.run.dir``) or the file
    system has no symbolic links.
    """
    root, target = Path(root).resolve(), Path(target).resolve()
    try:
        relative = target.relative_to(root)
    except ValueError:
        return None
    link, tmp = root / "latest", root / f".latest.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(relative, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return link


def format_metrics(metrics: dict[str, float]) -> str:
    """The headline metrics of a run in one line: validation and evaluation metrics, then the loss; the kNN
    accuracy next to its value at initialisation."""
    keys = [k for k in sorted(metrics) if k.startswith(SHOWN_PREFIXES) and not k.endswith("_init")]
    keys += [k for k in SHOWN_KEYS if k in metrics]
    parts = []
    for key in keys:
        text = f"{key} {metrics[key]:.4g}"
        if f"{key}_init" in metrics:
            text += f" (at initialisation {metrics[f'{key}_init']:.4g})"
        parts.append(text)
    return ", ".join(parts) if parts else "none logged"


def _quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def next_commands(run_dir: Path | str, overrides: list[str], has_checkpoint: bool) -> list[tuple[str, str]]:
    """(what, command) pairs for the commands a user runs after training: evaluate, export, look, continue."""
    run = shown_path(run_dir)
    ckpt = f"{run}/checkpoints/last.ckpt"
    data = [o for o in overrides if o.split("=", 1)[0] == "data" or o.startswith("data.")]
    commands = [("tensorboard", f"tensorboard --logdir {run}")]
    if has_checkpoint:
        commands = [
            ("evaluate", _quote(["python", "-m", "ssl_lightning.eval", f"ckpt={ckpt}", "protocol=linear", *data])),
            ("export", _quote(["python", "-m", "ssl_lightning.export", f"ckpt={ckpt}"]) + f"  # -> {run}/export/backbone.pt"),
            *commands,
            ("continue", _quote(["python", "-m", "ssl_lightning.train", *overrides, "resume=auto",
                                 f"hydra.run.dir={run}"]) + "  # with a larger trainer.max_epochs to train longer"),
        ]
    return commands


def final_report(run_dir: Path | str, metrics: dict[str, float], step: int, epoch: int, overrides: list[str],
                 latest: Path | None = None, single_run: bool = True) -> str:
    """The lines printed when a run ends: where it is, what it reached, and (for a single run) what to run next."""
    where = shown_path(run_dir) + (f"  (also {_unresolved(latest)})" if latest else "")
    lines = [f"Run directory: {where}", f"Final metrics at step {step} (epoch {epoch}): {format_metrics(metrics)}"]
    if single_run:
        has_checkpoint = (Path(run_dir) / "checkpoints" / "last.ckpt").exists()
        commands = next_commands(run_dir, overrides, has_checkpoint)
        width = max(len(what) for what, _ in commands)
        lines += ["Next:"] + [f"  {what:<{width}}  {command}" for what, command in commands]
    return "\n".join(lines)


def remove_if_empty(run_dir: Path | str) -> bool:
    """Remove ``run_dir`` when it holds only what Hydra writes at start-up (``.hydra/`` and the job's log), so a
    run that failed on a configuration error leaves nothing behind. A directory with anything else in it (a
    checkpoint, a resumed run's files) is never touched. Returns whether it was removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    entries = list(run_dir.iterdir())
    if any(not (e.name == ".hydra" and e.is_dir()) and not (e.suffix == ".log" and e.is_file()) for e in entries):
        return False
    for entry in entries:
        if entry.is_dir():
            for sub in entry.iterdir():
                if not sub.is_file():
                    return False
    for entry in entries:
        if entry.is_dir():
            for sub in entry.iterdir():
                sub.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    run_dir.rmdir()
    return True


class SweepReport(HydraCallback):
    """After a ``-m`` sweep: the sweep directory, ``outputs/latest`` pointing at it, and the summary command."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        latest = link_latest(sweep_dir)
        where = shown_path(sweep_dir) + (f"  (also {_unresolved(latest)})" if latest else "")
        print(f"Sweep directory: {where}\nNext:\n  summarize    python -m ssl_lightning.summarize {shown_path(sweep_dir)}"
              f"\n  tensorboard  tensorboard --logdir {shown_path(sweep_dir)}", flush=True)
