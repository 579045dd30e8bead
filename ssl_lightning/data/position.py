"""Where the training data stands, kept with the datamodule so that a resumed run starts its loader there.

Why the datamodule and not a callback: a ``DataLoader`` with ``num_workers > 0`` draws its first indices from
the sampler as soon as its iterator is created (each worker is sent ``prefetch_factor`` batches of indices),
and Lightning creates the training iterator while it sets up the optimizers (``estimated_stepping_batches``
-> ``fit_loop.setup_data()``), before any callback hook that follows the restore of its loop state
(``on_fit_start``, ``on_train_start``) and before it calls ``set_epoch``. A sampler positioned in those hooks
is positioned too late: the resumed run trains on epoch 0's first batches instead of the interrupted epoch's
remaining ones (with ``num_workers=0`` the iterator is lazy and the late positioning happened to work). The
datamodule's ``load_state_dict`` runs before the optimizers are set up, so :meth:`TrainPosition.positioned`
builds the training sampler at the right (epoch, batch) from the start.
"""

from __future__ import annotations

import warnings

from ssl_lightning.data.sampler import ShardedSampler


class TrainPosition:
    """Mixin for a ``LightningDataModule`` whose training loader uses a :class:`ShardedSampler`.

    Counts the training batches of the current epoch (:meth:`count_train_batch`, called from
    ``on_after_batch_transfer`` while training: at every point a checkpoint is written, the batches
    transferred are exactly the batches trained), saves ``(epoch, batches)`` in the checkpoint
    (``state_dict``) and, on resume (``load_state_dict``), starts the training sampler in that epoch with
    that many batches skipped (:meth:`positioned`). A finished epoch is saved as ``(epoch + 1, 0)``.
    """

    _position: tuple[int, int] = (0, 0)  # (epoch, batches of that epoch trained)
    _resume: tuple[int, int] | None = None

    def count_train_batch(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return
        epoch, batches = self._position
        self._position = (epoch, batches + 1) if epoch == trainer.current_epoch else (trainer.current_epoch, 1)

    def train_position(self) -> tuple[int, int]:
        """(epoch, batches of it trained), a finished epoch as the start of the next one."""
        epoch, batches = self._position
        trainer = getattr(self, "trainer", None)
        per_epoch = getattr(trainer, "num_training_batches", float("inf")) if trainer is not None else float("inf")
        return (epoch + 1, 0) if batches >= per_epoch else (epoch, batches)

    def state_dict(self) -> dict:
        epoch, batches = self.train_position()
        return {"train_epoch": epoch, "train_batches": batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resume_at(int(state_dict["train_epoch"]), int(state_dict["train_batches"]))

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start the next training loader at ``batches`` batches into ``epoch``."""
        self._resume = self._position = (epoch, batches)
        # Lightning cannot see that the sampler is positioned and would warn that a mid-epoch resume is
        # unreliable; with the position restored it is exact.
        warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")

    def positioned(self, sampler: ShardedSampler, batch_size: int) -> ShardedSampler:
        """``sampler`` set to the resumed epoch, its first batches skipped (once); unchanged on a fresh run."""
        if self._resume is not None:
            epoch, batches = self._resume
            sampler.set_epoch(epoch)
            if batches:
                sampler.fast_forward(batches * batch_size, epoch)
        return sampler

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        self.count_train_batch()
        return batch
