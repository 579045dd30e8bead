"""The linear probe on features built so that the answer is known."""

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.protocols import LinearProbe
from ssl_lightning.protocols.base import accuracy


def separable(n: int, dim: int = 16, num_classes: int = 5, seed: int = 0):
    """Labels of a fixed random linear map: linearly separable by construction (with a margin)."""
    w = torch.randn(dim, num_classes, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4 * n, dim, generator=torch.Generator().manual_seed(seed))
    scores = x @ w
    top2 = scores.topk(2, dim=1).values
    x = x[(top2[:, 0] - top2[:, 1]) > 0.5][:n]  # keep points away from the decision boundaries
    return x, (x @ w).argmax(dim=1)


@pytest.mark.parametrize("settings", [
    {"optimizer": "sgd", "epochs": 20, "batch_size": 100, "lr": 2.0},
    {"optimizer": "sgd", "epochs": 20, "batch_size": 100, "lr": 2.0, "bn": True},
    {"optimizer": "lbfgs", "lbfgs_max_iter": 200, "lbfgs_weight_decay": 1e-5},
])
def test_linearly_separable_features_are_learned(settings):
    train_x, train_y = separable(1000, seed=1)
    val_x, val_y = separable(500, seed=2)
    probe = LinearProbe(**settings)
    head = probe.fit_features(train_x, train_y, num_classes=5)
    with torch.no_grad():
        acc = accuracy(head(val_x), val_y, num_classes=5)
    assert acc["top1"] >= 97.0, acc
    assert acc["top5"] == 100.0


def test_random_labels_give_chance_on_held_out_data():
    g = torch.Generator().manual_seed(4)
    train_x, val_x = torch.randn(1000, 16, generator=g), torch.randn(2000, 16, generator=g)
    train_y, val_y = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    head = LinearProbe(optimizer="lbfgs", lbfgs_max_iter=100).fit_features(train_x, train_y, num_classes=10)
    with torch.no_grad():
        assert accuracy(head(val_x), val_y, 10)["top1"] == pytest.approx(10.0, abs=3.0)


def test_bn_standardises_with_the_training_statistics():
    """With bn=true the probe sees (x - mean) / std of the training features: its logits do not depend on
    the features' scale and offset."""
    x, y = separable(300, seed=5)
    probe = LinearProbe(optimizer="sgd", epochs=3, batch_size=32, bn=True)
    torch.manual_seed(0)
    head = probe.fit_features(x, y, num_classes=5)
    torch.manual_seed(0)
    head_scaled = probe.fit_features(1000.0 * x + 50.0, y, num_classes=5)
    with torch.no_grad():
        torch.testing.assert_close(head(x), head_scaled(1000.0 * x + 50.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(head[0].running_mean, x.mean(dim=0))


def test_sgd_schedule_is_cosine_to_zero_with_linear_lr_scaling():
    probe = LinearProbe(lr=0.1, epochs=4)
    head = probe.make_head(8, 3)
    optimizer, scheduler = probe.sgd(head, total_batch=512, steps=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)  # 0.1 x 512 / 256
    assert optimizer.param_groups[1]["weight_decay"] == 0.0  # no decay on the bias
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"optimizer": "adam"}, "protocol.optimizer='adam' is not allowed: 'sgd' or 'lbfgs'"),
    ({"features": "raw"}, "protocol.features='raw' is not allowed: 'cached' or 'augmented'"),
    ({"optimizer": "lbfgs", "features": "augmented"}, "L-BFGS is full-batch: it needs cached features"),
    ({"epochs": 0}, "protocol.epochs=0 is not allowed: an integer >= 1"),
    ({"lr": -1.0}, "protocol.lr=-1.0 is not allowed: a number > 0"),
    ({"momentum": 1.0}, "protocol.momentum=1.0 is not allowed"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LinearProbe(**kwargs)
    assert message in str(info.value)
