"""A sampler that makes data order and augmentations a pure function of (seed, epoch, index).

Every sample's augmentation is drawn from its own seed, so a run is reproducible whatever the number of
workers, an interrupted run resumes with exactly the batches it would have seen, and 2 ranks x batch B see
the same samples and views as 1 process with batch 2B.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ssl_lightning.distributed import rank, world_size


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one sample's augmentation in one epoch (Python's tuple hash is deterministic for ints)."""
    return hash((seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF


class ShardedSampler(Sampler):
    """Seeded, per-epoch shuffling of ``range(num_samples)``, sharded over DDP ranks.

    Rank r takes positions r, r + W, r + 2W, ... of the epoch's permutation, so the union of the ranks'
    k-th batches of size B is the k-th batch of size W*B of a single process. With ``drop_last`` every rank
    gets ``num_samples // W`` samples (equal batch counts, as DDP needs); without it the shards may differ
    by one (for evaluation, where ranks run no collectives per batch).

    Yields ``(index, augmentation_seed)`` when ``with_seed`` is set, plain indices otherwise. Lightning
    calls :meth:`set_epoch` at the start of every epoch; the trainer must run with
    ``use_distributed_sampler=False`` so that it does not replace this sampler.
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int = 0, drop_last: bool = False, with_seed: bool = False):
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.drop_last, self.with_seed = drop_last, with_seed
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, samples) to skip once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def fast_forward(self, num_samples: int, epoch: int) -> None:
        """Skip this rank's first ``num_samples`` of ``epoch`` the next time it is iterated (exact mid-epoch
        resume)."""
        self._skip = (epoch, num_samples)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch)) & 0x7FFF_FFFF_FFFF_FFFF)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        w = world_size()
        if self.drop_last:
            order = order[: self.num_samples // w * w]
        return order[rank() :: w]

    def __iter__(self) -> Iterator:
        indices = self._indices()
        if self._skip is not None and self._skip[0] == self.epoch:
            indices = indices[self._skip[1] :]
            self._skip = None
        if not self.with_seed:
            return iter(indices)
        return iter([(i, augmentation_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:  # the full epoch: Lightning counts the batches of a resumed epoch from the start
        w, r = world_size(), rank()
        if self.drop_last:
            return self.num_samples // w
        return len(range(r, self.num_samples, w))
