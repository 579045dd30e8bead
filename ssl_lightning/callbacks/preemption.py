"""Preemption: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and stops cleanly, on every
rank at the same step; a resumed run continues mid-epoch exactly where the interrupted one stopped."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_lightning.callbacks.agreed_flag import AgreedFlag
from ssl_lightning.checkpoint import atomic_symlink
from ssl_lightning.config import check
from ssl_lightning.distributed import world_size


class Preemption(Callback):
    """Makes an interruption cost nothing.

    - SIGTERM (a scheduler's preemption notice) or SIGINT (Ctrl-C; a second Ctrl-C aborts at once) only sets
      a flag: a signal handler runs between any two Python bytecodes, e.g. in the middle of DDP's gradient
      all-reduce, so it must not issue a collective itself (Lightning's own handler broadcasts from inside
      it, at a different point on each rank). Every ``check_every_n_steps`` optimizer steps each rank posts
      its flag to an all-reduce (the same collective at the same step on every rank, see
      :class:`~ssl_lightning.callbacks.agreed_flag.AgreedFlag`), and at the next step every rank reads the
      result; if any rank was signalled, all of them stop after that step, so one signalled process is
      enough (with Lightning's launcher, ``kill`` of rank 0 alone; under SLURM or torchrun, every rank).
      On one process there is no collective: the flag is read after every step.
    - Lightning's per-step SIGTERM broadcast (a collective and a host-device synchronisation in every step
      of a DDP run) is switched off while this callback trains.
    - Stopping: Lightning raises its ``SIGTERMException`` after the step (and its LR-scheduler step); this
      callback then writes ``checkpoints/preempted-epoch{E}-step{S}.ckpt`` and points ``checkpoints/last.ckpt``
      at it, so ``resume=auto`` (same ``hydra.run.dir``) continues from there.
    - Resuming mid-epoch: the datamodule saves where its training data stands and starts the resumed run's
      sampler there (:class:`~ssl_lightning.data.position.TrainPosition`).

    Args:
        dirpath: where the preemption checkpoint goes (the run's ``checkpoints/``).
        check_every_n_steps: how often the ranks agree on the flag (>= 1). A signal is acted on within
            ``check_every_n_steps + 1`` steps; schedulers give tens of seconds of notice.
    """

    def __init__(self, dirpath: str, check_every_n_steps: int = 10):
        check(isinstance(check_every_n_steps, int) and check_every_n_steps >= 1, "callbacks.preemption.check_every_n_steps",
              check_every_n_steps, "an integer >= 1")
        self.dirpath = Path(dirpath)
        self.check_every_n_steps = check_every_n_steps
        self.signalled = False  # set by the handler; the only thing it does
        self._agreed = AgreedFlag()
        self._previous: dict[int, object] = {}
        self._trainer: L.Trainer | None = None
        self.preempted_checkpoint: Path | None = None

    # -- signals ------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signalled = False
        for signum in (signal.SIGTERM, signal.SIGINT):  # after Lightning installed its own (replaced here)
            try:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: leave the signals to Lightning
                return
        # Lightning broadcasts a SIGTERM tensor from rank 0 and reads it on the host before every DDP step
        epoch_loop = trainer.fit_loop.epoch_loop
        if hasattr(epoch_loop, "_broadcast_sigterm_tensor"):
            epoch_loop._broadcast_sigterm_tensor = lambda: None

    def _on_signal(self, signum, frame) -> None:
        if self.signalled and signum == signal.SIGINT:  # a second Ctrl-C aborts
            raise KeyboardInterrupt
        self.signalled = True

    def _restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        if self._trainer is not None:
            self._trainer.fit_loop.epoch_loop.__dict__.pop("_broadcast_sigterm_tensor", None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if world_size() == 1:
            stop = self.signalled
        else:
            taken = self._agreed.take()  # posted one step ago, by every rank
            stop = taken is not None and taken[0]
            if not stop and trainer.global_step % self.check_every_n_steps == 0:
                self._agreed.post(torch.full((1,), int(self.signalled), device=pl_module.device))
        if stop and not trainer.received_sigterm:
            rank_zero_info("Interrupted: saving a checkpoint after this step (Ctrl-C again to abort)")
            trainer._signal_connector.received_sigterm = True  # Lightning stops after this step, on every rank

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_signals()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_signals()
        if not isinstance(exception, SIGTERMException):
            return  # a crash or a non-finite loss: the weights may be bad, keep the last good checkpoint
        name = f"preempted-epoch{trainer.current_epoch:03d}-step{trainer.global_step}.ckpt"
        path = self.dirpath / name
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            atomic_symlink(name, self.dirpath / "last.ckpt")
        self.preempted_checkpoint = path
        rank_zero_info(f"Preempted at step {trainer.global_step}: saved {path}; resume with resume=auto")

    # -- checkpoints written before the datamodule kept the data position ---------------------------------

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Older checkpoints kept ``(epoch, batches)`` here; hand it to the datamodule if it has none."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        if "batches" in state_dict and hasattr(dm, "resume_at") and getattr(dm, "_resume", None) is None:
            dm.resume_at(int(state_dict["epoch"]), int(state_dict["batches"]))
