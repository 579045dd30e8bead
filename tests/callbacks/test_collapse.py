import math

import pytest
import torch

from ssl_lightning.callbacks import CollapseMonitor, normalized_std, rankme
from ssl_lightning.callbacks.collapse import singular_values
from ssl_lightning.config import ConfigError
from ssl_lightning.train import train
from tests.methods.test_training import SMALL_HEADS


def rankme_reference(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Garrido et al. (2023), Eq. 1, from a full SVD in float64: exp(-sum_k p_k log p_k), p_k = s_k / sum(s) + eps."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + eps
    return math.exp(-sum(pk * math.log(pk) for pk in p.tolist()))


def test_identical_embeddings_have_zero_spread_and_rank_one():
    z = torch.randn(1, 32).repeat(64, 1)
    assert normalized_std(z).item() == pytest.approx(0.0, abs=1e-6)
    assert rankme(z).item() == pytest.approx(1.0, abs=1e-3)


def test_orthonormal_set_has_full_rank():
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    assert rankme(q.float()).item() == pytest.approx(d, rel=1e-4)
    assert rankme(torch.eye(d, 64)).item() == pytest.approx(d, rel=1e-4)


def test_isotropic_gaussian_is_nearly_full_rank_and_spread():
    d = 32
    z = torch.randn(8192, d, generator=torch.Generator().manual_seed(0))
    assert 0.95 * d < rankme(z).item() <= d
    assert normalized_std(z).item() == pytest.approx(1 / math.sqrt(d), rel=0.02)


def test_rank_follows_the_number_of_used_dimensions():
    z = torch.randn(2048, 4) @ torch.randn(4, 64)  # 64-dim embeddings living in a 4-dim subspace
    assert 2.0 < rankme(z).item() < 4.2


@pytest.mark.parametrize("shape", [(50, 20), (20, 50)])
def test_gram_singular_values_match_svd_and_rankme_the_reference(shape):
    z = torch.randn(*shape) * torch.linspace(0.1, 3, shape[1])
    torch.testing.assert_close(singular_values(z).float(), torch.linalg.svdvals(z), rtol=1e-4, atol=1e-4)
    assert rankme(z).item() == pytest.approx(rankme_reference(z), rel=1e-5)


def test_ring_buffer_keeps_the_most_recent_embeddings():
    monitor = CollapseMonitor(num_samples=5)
    monitor.on_train_epoch_start(None, None)
    batches = [torch.arange(3 * k, 3 * k + 3, dtype=torch.float32)[:, None].repeat(1, 2) for k in range(3)]  # rows 0..8
    for b in batches:
        monitor.on_train_batch_end(None, None, {"loss": None, "z": b}, None, 0)
    kept = sorted(monitor._buffer[: monitor._count, 0].tolist())
    assert kept == [4.0, 5.0, 6.0, 7.0, 8.0]
    monitor.on_train_batch_end(None, None, {"loss": None}, None, 0)  # no "z": ignored
    monitor.on_train_batch_end(None, None, {"z": torch.arange(100.0, 107.0)[:, None].repeat(1, 2)}, None, 0)
    assert sorted(monitor._buffer[:, 0].tolist()) == [102.0, 103.0, 104.0, 105.0, 106.0]


def test_bad_buffer_size_is_named():
    with pytest.raises(ConfigError, match=r"callbacks.collapse.num_samples=1 is not allowed: an integer >= 2"):
        CollapseMonitor(num_samples=1)


def test_logged_once_per_epoch_in_a_real_run(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train(make_cfg("method=simsiam", *SMALL_HEADS["simsiam"], "trainer.max_epochs=2", "data.num_samples=32", "~callbacks.knn",
                             "~callbacks.view_grid", "~callbacks.linear_probe"))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))  # every events file of the run
    acc.Reload()
    for key in ("train/z_std", "train/rank"):
        events = acc.Scalars(key)
        assert len(events) == 2  # once per epoch (32 images / batch 16, 2 epochs)
        assert all(math.isfinite(e.value) for e in events)
    assert 0 < metrics["train/z_std"] <= 1 and 1 <= metrics["train/rank"] <= 32
