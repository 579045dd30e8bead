"""The kNN protocol on features built so that the answer is known."""

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.protocols import KNN


def clusters(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)) * 10  # shared by bank and queries
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_well_separated_clusters_give_100_percent():
    bank, bank_y = clusters(40, 10, 32, 0.5, seed=1)
    query, query_y = clusters(20, 10, 32, 0.5, seed=2)
    acc = KNN(k=200, temperature=0.1).evaluate_features(bank, bank_y, query, query_y, num_classes=10)
    assert acc == {"top1": 100.0, "top5": 100.0}


def test_random_labels_give_chance():
    g = torch.Generator().manual_seed(3)
    bank, query = torch.randn(3000, 32, generator=g), torch.randn(2000, 32, generator=g)
    bank_y, query_y = torch.randint(0, 10, (3000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    acc = KNN().evaluate_features(bank, bank_y, query, query_y, num_classes=10)
    assert acc["top1"] == pytest.approx(10.0, abs=3.0)
    assert acc["top5"] == pytest.approx(50.0, abs=5.0)


def test_top5_is_top_c_with_fewer_than_5_classes():
    bank, bank_y = clusters(10, 3, 8, 20.0, seed=1)  # overlapping: top-1 below 100
    query, query_y = clusters(10, 3, 8, 20.0, seed=2)
    acc = KNN(k=5).evaluate_features(bank, bank_y, query, query_y, num_classes=3)
    assert acc["top5"] == 100.0 and acc["top1"] < 100.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, "protocol.k=0 is not allowed: an integer >= 1"),
    ({"k": 2.5}, "protocol.k=2.5 is not allowed: an integer >= 1"),
    ({"temperature": 0}, "protocol.temperature=0 is not allowed: a number > 0"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KNN(**kwargs)
