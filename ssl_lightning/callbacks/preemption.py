"""Preemption: SIGTERM or Ctrl-C finishes the current step, saves a checkpoint and stops cleanly; a resumed
run continues mid-epoch exactly where the interrupted one stopped."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssl_lightning.checkpoint import atomic_symlink


class Preemption(Callback):
    """Makes an interruption cost nothing.

    - SIGTERM (a scheduler's preemption notice): Lightning stops after the running step; this callback then
      writes ``checkpoints/preempted-epoch{E}-step{S}.ckpt`` and points ``checkpoints/last.ckpt`` at it, so
      ``resume=auto`` (same ``hydra.run.dir``) continues from there.
    - SIGINT (Ctrl-C) is handled like SIGTERM; a second Ctrl-C aborts at once.
    - Resuming mid-epoch: the callback records how many batches of the epoch were consumed; on resume it
      fast-forwards the training sampler by that many batches, so the resumed run sees exactly the batches
      (and, with the seeded augmentation, exactly the views) the uninterrupted run would have seen.
    """

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self._position = (0, 0)  # (epoch, batches of that epoch consumed): saved with every checkpoint
        self._resume_position: tuple[int, int] | None = None
        self._previous_sigint = None
        self.preempted_checkpoint: Path | None = None

    # -- signals ------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fast_forward(trainer)
        try:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: leave Ctrl-C to Lightning
            self._previous_sigint = None

    def _on_sigint(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)  # 2nd Ctrl-C aborts
        rank_zero_info("Interrupted: finishing the current step, then saving a checkpoint (Ctrl-C again to abort)")
        handler = signal.getsignal(signal.SIGTERM)  # Lightning's: stop at the end of the step
        if callable(handler):
            handler(signum, frame)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return  # a crash or a non-finite loss: the weights may be bad, keep the last good checkpoint
        name = f"preempted-epoch{trainer.current_epoch:03d}-step{trainer.global_step}.ckpt"
        path = self.dirpath / name
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            atomic_symlink(name, self.dirpath / "last.ckpt")
        self.preempted_checkpoint = path
        rank_zero_info(f"Preempted at step {trainer.global_step}: saved {path}; resume with resume=auto")

    # -- exact mid-epoch resume -----------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._position = (trainer.current_epoch, batch_idx + 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._position = (trainer.current_epoch + 1, 0)

    def _fast_forward(self, trainer: L.Trainer) -> None:
        """On a mid-epoch resume (Lightning calls no on_train_epoch_start then), make the sampler skip the
        batches the interrupted run already trained on, before the epoch's data iterator is created."""
        if self._resume_position is None:
            return
        epoch, batches = self._resume_position
        self._resume_position = None
        if epoch != trainer.current_epoch or batches == 0:
            return
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not hasattr(sampler, "fast_forward"):
            raise RuntimeError(f"cannot resume mid-epoch: the training sampler {type(sampler).__name__} cannot skip batches")
        sampler.fast_forward(batches * loader.batch_size, epoch)
        rank_zero_info(f"Resuming epoch {epoch} after its first {batches} batches")

    def state_dict(self) -> dict:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_position = (int(state_dict["epoch"]), int(state_dict["batches"]))
        # Lightning cannot see that the sampler fast-forwards (on_train_epoch_start) and would warn that a
        # mid-epoch resume is unreliable; with this callback it is exact.
        warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")
