"""The fidelity fixes of each method's recipe against its official code: zero-init residual per method, the
SimCLR projector and loss scale, BYOL's per-schedule presets, SwAV's LARC on every parameter and its warmup."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from ssl_lightning.optim import warmup_cosine

ZERO_INIT = {"simclr": True, "byol": True, "simsiam": True, "mocov3": True, "barlow_twins": True, "vicreg": True,
             "moco": False, "swav": False, "rotation": False}


@pytest.mark.parametrize("method", sorted(ZERO_INIT))
def test_zero_init_residual_is_each_methods_official_default(make_cfg, method):
    backbone = instantiate(make_cfg(f"method={method}").backbone)
    last_bns = [block.bn2.weight for layer in (backbone.layer1, backbone.layer4) for block in layer]  # BasicBlock
    assert all(bool((w == 0).all()) == ZERO_INIT[method] for w in last_bns)
    assert bool((backbone.layer1[0].bn1.weight == 1).all())  # only the residual branch's last BN


def test_zero_init_residual_is_overridable(make_cfg):
    assert make_cfg("method=simclr", "backbone.zero_init_residual=false").backbone.zero_init_residual is False


def official_simclr_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """google-research/simclr objective.py add_contrastive_loss on one device, written out."""
    h1, h2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = h1.shape[0]
    masks = torch.eye(n) * 1e9
    logits_aa, logits_bb = h1 @ h1.T / temperature - masks, h2 @ h2.T / temperature - masks
    logits_ab, logits_ba = h1 @ h2.T / temperature, h2 @ h1.T / temperature
    labels = torch.arange(n)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], 1), labels, reduction="none")
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], 1), labels, reduction="none")
    return (loss_a + loss_b).mean()


def test_simclr_projector_and_loss_as_the_official_code(make_cfg):
    cfg = make_cfg("method=simclr", "method.proj_output_dim=16", "method.temperature=0.5")
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    linear1, bn1, _, linear2, bn2 = model.projector
    width = model.backbone.num_features
    assert (linear1.in_features, linear1.out_features, linear2.out_features) == (width, width, 16)  # hidden = backbone
    assert linear1.bias is None and linear2.bias is None
    assert bn1.bias.requires_grad and bn2.weight.requires_grad and not bn2.bias.requires_grad  # output BN: no centre
    assert linear1.weight.std().item() == pytest.approx(0.01, rel=0.05)
    model.log, model.log_lr = (lambda *a, **k: None), (lambda: None)
    x1, x2 = torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)
    loss = model.training_step(((x1, x2), torch.zeros(6)), 0)["loss"]
    with torch.no_grad():
        z1, z2 = model.projector(model.backbone(torch.cat([x1, x2]))).chunk(2)
    torch.testing.assert_close(loss.detach(), official_simclr_loss(z1, z2, 0.5), rtol=1e-5, atol=1e-5)
    loss.backward()
    assert bn2.bias.grad is None and torch.count_nonzero(bn2.bias) == 0
    names = {id(p) for g in model.parameter_groups(1e-6) for p in g["params"]}
    assert id(bn2.bias) not in names


@pytest.mark.parametrize("preset, lr, wd, tau", [("byol", 0.2, 1.5e-6, 0.996), ("byol_300ep", 0.3, 1e-6, 0.99),
                                                 ("byol_100ep", 0.45, 1e-6, 0.99), ("byol_40ep", 0.45, 1e-6, 0.97)])
def test_byol_schedule_presets_are_the_official_ones(make_cfg, preset, lr, wd, tau):
    cfg = make_cfg(f"method={preset}")
    assert (cfg.method.optimizer.lr, cfg.method.optimizer.weight_decay, cfg.method.base_tau) == (lr, wd, tau)
    assert cfg.method._target_.endswith("BYOL") and cfg.backbone.zero_init_residual is True
    assert [v.blur_prob for v in cfg.augment.views] == [1.0, 0.1]


def test_swav_larc_adapts_and_decays_every_parameter(make_cfg):
    cfg = make_cfg("method=swav", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.num_prototypes=10")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    groups = model.parameter_groups(1e-6)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-6 and not groups[0].get("lars_exclude", False)
    assert len(groups[0]["params"]) == len([p for p in model.parameters() if p.requires_grad])
    cfg = make_cfg("method=swav", "method.lars_all_params=false", "method.proj_hidden_dim=32",
                   "method.proj_output_dim=16", "method.num_prototypes=10")
    assert len(instantiate(cfg.method, backbone=instantiate(cfg.backbone)).parameter_groups(1e-6)) == 2


def test_warmup_starts_where_the_swav_script_does():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=4.8)
    sched = warmup_cosine(opt, total_steps=100, steps_per_epoch=5, warmup_epochs=2, start_lr_ratio=0.3 / 4.8,
                          warmup_includes_start=True)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = torch.linspace(0.3, 4.8, 10)  # np.linspace(start_warmup, base_lr, warmup iterations)
    torch.testing.assert_close(torch.tensor(lrs[:10]), expected, rtol=1e-6, atol=1e-6)
    assert lrs[10] == pytest.approx(4.8, rel=1e-3)
    assert make_cfg_value_swav_start() == pytest.approx(0.0625)


def make_cfg_value_swav_start() -> float:
    from hydra import compose, initialize_config_dir

    from ssl_lightning.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["method=swav"]).method.scheduler.start_lr_ratio
