"""Evaluation features stay sharded: 2 gloo ranks, each holding N / 2 rows of the bank, give the kNN predictions
and the kNN / linear-probe accuracies (SGD with BN, L-BFGS) of one process holding all N rows."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ssl_lightning.callbacks.knn import bank_dtype, knn_predict, knn_scores
from ssl_lightning.data import SyntheticDataModule
from ssl_lightning.protocols import KNN, LinearProbe
from ssl_lightning.protocols.base import clean_features
from tests.gloo import run_ranks

N = 45  # odd: the ranks' shards differ by one row


class _Fabric:
    """What the protocols use of a Fabric, for ranks that already joined a gloo group."""

    device = torch.device("cpu")
    autocast = staticmethod(contextlib.nullcontext)

    def log_dict(self, metrics, step=None) -> None:
        pass


def _backbone() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())  # (B, 32)
    net.num_features = 32
    return net.eval()


def _datamodule() -> SyntheticDataModule:
    dm = SyntheticDataModule(num_samples=N, image_size=8, batch_size=4, num_workers=0, num_classes=4, seed=0,
                             mean=[0.5] * 3, std=[0.25] * 3, small_images=True)
    dm.setup("fit")
    return dm


def _evaluate(rank: int = 0) -> dict:
    backbone, dm, fabric = _backbone(), _datamodule(), _Fabric()
    bank, bank_y = clean_features(backbone, dm, "bank", fabric, normalize=True, dtype=torch.bfloat16)
    query, query_y = clean_features(backbone, dm, "val", fabric)
    scores = knn_scores(query, bank, bank_y, dm.num_classes, k=7)
    knn = KNN(k=7)
    out = {"bank_rows": bank.shape[0], "bank_dtype": bank.dtype, "pred": scores.argmax(dim=1),
           "query_index": torch.tensor(list(dm.eval_dataloader("val").sampler)), "knn": knn.run(backbone, dm, fabric, 0),
           "knn_bank_rows": knn.bank_rows}
    sgd = LinearProbe(epochs=3, batch_size=8, lr=0.5, bn=True, val_every_n_epochs=0)
    out["linear"] = sgd.run(backbone, dm, fabric, 0)
    x, y, index = clean_features(backbone, dm, "bank", fabric, with_index=True)
    out["sgd_head"] = sgd.fit_features(x, y, dm.num_classes, seed=0, index=index).state_dict()
    out["lbfgs"] = LinearProbe(optimizer="lbfgs", lbfgs_max_iter=15).run(backbone, dm, fabric, 0)
    out["linear_rows"] = sgd.train_rows
    return out


def test_two_ranks_equal_one_process_with_half_the_bank_each():
    one = _evaluate()
    ranks = run_ranks(_evaluate, 2)
    assert one["bank_rows"] == N and [r["bank_rows"] for r in ranks] == [23, 22]  # N / world size rows each
    assert [r["knn_bank_rows"] for r in ranks] == [23, 22] and [r["linear_rows"] for r in ranks] == [23, 22]
    assert all(r["bank_dtype"] == torch.bfloat16 for r in ranks)
    pred = torch.empty_like(one["pred"])
    for r in ranks:
        pred[r["query_index"]] = r["pred"]
    assert torch.equal(pred, one["pred"])  # every query's prediction
    assert len(set(one["pred"].tolist())) > 1  # not a constant answer
    for r in ranks:
        assert r["knn"] == one["knn"] and r["knn"]["train_images"] == N
        assert r["linear"] == one["linear"] and r["lbfgs"] == one["lbfgs"]
        for key, value in one["sgd_head"].items():  # the same SGD steps: fp32 sums in another order only
            torch.testing.assert_close(r["sgd_head"][key], value, rtol=1e-5, atol=1e-6)
    assert one["linear"]["top1"] > 25.0 or one["lbfgs"]["top1"] > 25.0  # the probe learns something (4 classes)


def test_one_process_knn_scores_equal_the_whole_bank_vote():
    """``knn_scores`` on one process (bank chunks merged by top-k) equals a direct top-k over the whole bank."""
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    normed = torch.nn.functional.normalize(bank, dim=1)
    sim, idx = (torch.nn.functional.normalize(query, dim=1) @ normed.T).topk(20, dim=1)
    expected = torch.zeros(40, 5).scatter_add_(1, labels[idx], (sim / 0.1).exp())
    got = knn_scores(query, normed, labels, 5, k=20, temperature=0.1, chunk_size=16, bank_rows=64)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(knn_predict(query, bank, labels, 5, k=20), expected)
    assert bank_dtype(torch.device("cpu")) == torch.bfloat16
