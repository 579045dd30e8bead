"""Few-label evaluation: a fixed, seeded, class-balanced subset of the labelled training images."""

import numpy as np
import pytest

from ssl_lightning.config import ConfigError
from ssl_lightning.data import SyntheticDataModule
from ssl_lightning.data.datasets import labels_of, stratified_subset


def test_subset_is_class_balanced_seeded_and_nested():
    labels = np.repeat(np.arange(4), [100, 50, 20, 3])
    labels = np.concatenate([labels, np.full(30, -1)])  # unlabelled images are never chosen
    subset = stratified_subset(labels, 0.1, seed=0)
    counts = np.bincount(labels[subset], minlength=4)
    assert counts.tolist() == [10, 5, 2, 1]  # round(0.1 n_c), at least one per class
    assert (labels[subset] >= 0).all() and len(np.unique(subset)) == len(subset)
    np.testing.assert_array_equal(stratified_subset(labels, 0.1, seed=0), subset)  # fixed
    assert not np.array_equal(stratified_subset(labels, 0.1, seed=1), subset)  # seeded
    assert set(subset) <= set(stratified_subset(labels, 0.5, seed=0))  # 10% within 50%
    assert len(stratified_subset(labels, 1.0, seed=0)) == 173


def test_datamodule_subsets_the_bank_split_only():
    full = SyntheticDataModule(num_samples=64, image_size=8, num_classes=4, batch_size=8, num_workers=0)
    few = SyntheticDataModule(num_samples=64, image_size=8, num_classes=4, batch_size=8, num_workers=0, label_fraction=0.25)
    bank_labels = labels_of(full.split("bank"))
    expected = sum(max(1, round(0.25 * n)) for n in np.bincount(bank_labels))
    assert len(few.split("bank")) == expected < 64
    assert len(few.split("train")) == len(few.split("val")) == 64  # pretraining and validation images untouched
    x, y = next(iter(few.supervised_dataloader(lambda img: np.asarray(img, dtype=np.float32), batch_size=4)))
    assert x.shape == (4, 8, 8, 3) and set(y.tolist()) <= set(bank_labels.tolist())


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5])
def test_label_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ConfigError, match=rf"data.label_fraction={fraction} is not allowed: a fraction in \(0, 1\]"):
        SyntheticDataModule(num_samples=16, label_fraction=fraction)
