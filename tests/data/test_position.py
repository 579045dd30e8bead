"""The training data position is saved with the datamodule and restored before the loader's iterator
exists: with loader workers, indices are drawn as soon as the iterator is created (before Lightning calls
set_epoch or any hook after its restore), so a late positioning would train on the wrong batches."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ssl_lightning.data import SyntheticDataModule


def make(workers: int) -> SyntheticDataModule:
    return SyntheticDataModule(num_samples=32, image_size=4, batch_size=4, num_workers=workers, seed=3)


def labels_and_pixels(loader) -> list[torch.Tensor]:
    return [x[0, 0, 0] for x, _ in loader]  # one number per image: order and augmentation


def test_a_resumed_loader_starts_where_the_saved_position_says_even_with_workers():
    reference = make(0).train_dataloader()
    reference.sampler.set_epoch(1)
    expected = labels_and_pixels(reference)  # the whole of epoch 1
    resumed = make(2)
    resumed.load_state_dict({"train_epoch": 1, "train_batches": 3})  # as Lightning does, before the loader exists
    loader = resumed.train_dataloader()
    iterator = iter(loader)  # Lightning creates it here, before set_epoch: the workers fetch at once
    loader.sampler.set_epoch(1)
    got = [x[0, 0, 0] for x, _ in iterator]
    assert len(got) == len(expected) - 3
    for a, b in zip(got, expected[3:]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_saved_position_counts_trained_batches_and_rolls_over_a_finished_epoch():
    dm = make(0)
    dm.trainer = SimpleNamespace(training=True, current_epoch=2, num_training_batches=8)
    assert dm.state_dict() == {"train_epoch": 0, "train_batches": 0}
    for _ in range(5):
        dm.on_after_batch_transfer(([torch.zeros(1)], None), 0)
    assert dm.state_dict() == {"train_epoch": 2, "train_batches": 5}
    for _ in range(3):
        dm.on_after_batch_transfer(([torch.zeros(1)], None), 0)
    assert dm.state_dict() == {"train_epoch": 3, "train_batches": 0}  # the epoch is done: the next one
    dm.trainer.current_epoch = 3
    dm.on_after_batch_transfer(([torch.zeros(1)], None), 0)
    assert dm.state_dict() == {"train_epoch": 3, "train_batches": 1}
    dm.trainer.training = False  # validation batches do not count
    dm.on_after_batch_transfer(([torch.zeros(1)], None), 0)
    assert dm.state_dict() == {"train_epoch": 3, "train_batches": 1}
