"""SimSiam, Barlow Twins and VICReg: optimizer groups as the papers set them, and bad values named before training."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from ssl_lightning.config import ConfigError
from ssl_lightning.optim import warmup_cosine
from ssl_lightning.train import train
from tests.methods.test_training import SMALL_HEADS
from tests.conftest import error_of


class RecordLR(Callback):
    """Records every parameter group's LR, weight decay and flags at the first and the last step (in the
    class attribute ``runs``, since Hydra builds the instance)."""

    runs: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        self.record = {"first": None, "last": None}
        RecordLR.runs.append(self.record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "fixed_lr": g.get("fixed_lr", False),
                   "n": len(g["params"])} for g in trainer.optimizers[0].param_groups]
        self.record["first"] = self.record["first"] or groups
        self.record["last"] = groups


def run_and_record(make_cfg, *overrides) -> dict:
    """2 epochs of 2 steps (32 images, batch 16) with only the recorder as callback."""
    train(make_cfg(*overrides, "trainer.max_epochs=2", "data.num_samples=32", "callbacks=none",
                   "+callbacks.record={_target_: tests.methods.test_hyperparameters.RecordLR}"))
    return RecordLR.runs[-1]


def test_simsiam_predictor_lr_is_fixed_and_decay_split_applies_inside_it(make_cfg):
    rec = run_and_record(make_cfg, "method=simsiam", *SMALL_HEADS["simsiam"])
    lr = 0.05 * 16 / 256  # base x B/256, synthetic batch 16
    assert len(rec["first"]) == 4
    body_decay, body_no_decay, pred_decay, pred_no_decay = rec["last"]
    assert [g["fixed_lr"] for g in rec["last"]] == [False, False, True, True]
    assert [g["weight_decay"] for g in rec["last"]] == [1e-4, 0.0, 1e-4, 0.0]
    assert pred_decay["n"] == 2 and pred_no_decay["n"] == 3  # 2 linear weights; BN weight, BN bias, output bias
    assert rec["first"][0]["lr"] == pytest.approx(lr)  # no warmup
    assert body_decay["lr"] == body_no_decay["lr"] < 0.2 * lr  # cosine-decayed at the last of 4 steps
    assert pred_decay["lr"] == pred_no_decay["lr"] == pytest.approx(lr)


def test_barlow_twins_biases_and_norms_get_their_own_lr(make_cfg):
    rec = run_and_record(make_cfg, "method=barlow_twins", *SMALL_HEADS["barlow_twins"], "method.scheduler.warmup_epochs=1")
    scale = 16 / 256
    weights, biases = rec["first"]
    # warmup over the first epoch (2 steps): the first step runs at half of each group's peak LR
    assert weights["lr"] == pytest.approx(0.2 * scale / 2) and weights["weight_decay"] == 1.5e-6
    assert biases["lr"] == pytest.approx(0.0048 * scale / 2) and biases["weight_decay"] == 0.0
    assert rec["last"][1]["lr"] / rec["last"][0]["lr"] == pytest.approx(0.0048 / 0.2)


def test_warmup_cosine_keeps_fixed_groups_and_scales_the_others():
    p, q = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "fixed_lr": True}], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, steps_per_epoch=5, warmup_epochs=0)
    for _ in range(9):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < 0.1 and opt.param_groups[1]["lr"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=barlow_twins", "method.lambd=0"], "method.lambd=0 is not allowed: a weight > 0"),
        (["method=barlow_twins", "method.lambd=-0.005"], "method.lambd=-0.005 is not allowed: a weight > 0"),
        (["method=barlow_twins", "method.bias_lr=0"], "method.bias_lr=0 is not allowed: a base LR > 0"),
        (["method=barlow_twins", "method.proj_output_dim=0"], "method.proj_output_dim=0 is not allowed: a layer width"),
        (["method=vicreg", "method.std_coeff=0"], "method.std_coeff=0 is not allowed: a weight > 0 for the variance term"),
        (["method=vicreg", "method.sim_coeff=-25"], "method.sim_coeff=-25 is not allowed: a weight > 0"),
        (["method=vicreg", "method.cov_coeff=-1"], "method.cov_coeff=-1 is not allowed: a weight >= 0"),
        (["method=vicreg", "method.eps=0"], "method.eps=0 is not allowed: a small constant > 0"),
        (["method=vicreg", "method.gamma=-1.0"], "method.gamma=-1.0 is not allowed: a target standard deviation > 0"),
        (["method=vicreg", "method.proj_hidden_dim=-8"], "method.proj_hidden_dim=-8 is not allowed: a layer width"),
        (["method=simsiam", "method.pred_hidden_dim=0"], "method.pred_hidden_dim=0 is not allowed: a layer width"),
        (["method=simsiam", "method.proj_layers=1"], "method.proj_layers=1 is not allowed: a number of projector layers >= 2"),
        (["method=simsiam", "augment.views=[{},{},{}]"], "augment.views gives 3 views but method SimSiam needs 2"),
        (["method=barlow_twins", "augment.views=[{},{size_ratio: 0.5, count: 4}]"],
         "augment.views gives 5 views but method BarlowTwins needs 2"),
        (["method=vicreg", "data.batch_size=1"], "data.batch_size=1 is too small for VICReg"),
        (["method=simsiam", "callbacks.collapse.num_samples=1"], "callbacks.collapse.num_samples=1 is not allowed"),
    ],
)
def test_bad_values_are_named(make_cfg, overrides, message):
    with pytest.raises((ConfigError, InstantiationException)) as info:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert message in error_of(info.value)


@pytest.mark.parametrize("method", ["simsiam", "barlow_twins", "vicreg"])
def test_paper_heads(make_cfg, method):
    model = instantiate(make_cfg(f"method={method}").method, backbone=instantiate(make_cfg().backbone))
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    norms = [m for m in model.projector if isinstance(m, torch.nn.BatchNorm1d)]
    if method == "simsiam":
        assert [lin.out_features for lin in linears] == [2048, 2048, 2048] and len(norms) == 3
        assert not norms[-1].affine and isinstance(model.projector[-1], torch.nn.BatchNorm1d)
        pred = [m for m in model.predictor if isinstance(m, torch.nn.Linear)]
        assert [lin.out_features for lin in pred] == [512, 2048] and pred[-1].bias is not None
        assert not isinstance(model.predictor[-1], torch.nn.BatchNorm1d)
        cifar = instantiate(make_cfg("method=simsiam", "method.proj_layers=2").method, backbone=instantiate(make_cfg().backbone))
        cifar_linears = [m for m in cifar.projector if isinstance(m, torch.nn.Linear)]
        assert [lin.out_features for lin in cifar_linears] == [2048, 2048]  # the paper's CIFAR-10 projector
        assert not cifar.projector[-1].affine
    else:
        assert [lin.out_features for lin in linears] == [8192, 8192, 8192] and len(norms) == 2
        assert isinstance(model.projector[-1], torch.nn.Linear) and model.projector[-1].bias is None
