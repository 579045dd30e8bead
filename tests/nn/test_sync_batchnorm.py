"""SyncBatchNorm: the lean global-statistics Function equals BatchNorm (one process, and 2 gloo ranks x B against
one process x 2B), keeps only what backward needs, outputs the input's dtype; the conversion to torch's
SyncBatchNorm (CUDA) keeps every parameter object, parameter group and EMA pair."""

from __future__ import annotations

import torch
from torch import nn

from ssl_lightning.nn import SyncBatchNorm, convert_sync_batchnorm
from ssl_lightning.nn.sync_batchnorm import _GlobalBatchNorm
from tests.gloo import one_rank_group, run_ranks

WORLD, B, C = 2, 6, 5


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * B, C, 4, 3, generator=g) * 3 + 1  # (2B, C, H, W), mean and scale far from 0 / 1
    upstream = torch.randn(x.shape, generator=g)
    weight, bias = torch.rand(C, generator=g) + 0.5, torch.rand(C, generator=g) - 0.5
    return x.to(dtype), upstream.to(dtype), weight, bias


def _reference(x, upstream, weight, bias):
    """nn.BatchNorm2d on the whole batch, two training steps (the second for the running statistics)."""
    bn = nn.BatchNorm2d(C, momentum=0.2)
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    x = x.clone().requires_grad_(True)
    y = bn(x)
    (y * upstream).sum().backward()
    bn(x.detach() * 2 - 1)
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def _sync_steps(x, upstream, weight, bias) -> dict:
    bn = SyncBatchNorm(C, momentum=0.2)
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    x = x.clone().requires_grad_(True)
    y = bn(x)
    (y * upstream).sum().backward()
    bn(x.detach() * 2 - 1)
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def _rank_case(rank: int) -> dict:
    x, upstream, weight, bias = _data()
    mine = slice(rank * B, (rank + 1) * B)
    result = _sync_steps(x[mine], upstream[mine], weight, bias)
    for key in ("w_grad", "b_grad"):  # DDP's sum (then mean) over ranks of the local parameter gradients
        torch.distributed.all_reduce(result[key])
    xb, ub, _, _ = _data(torch.bfloat16)
    bn = SyncBatchNorm(C).train()
    xr = xb[mine].clone().requires_grad_(True)
    yb = bn(xr)
    (yb.float() * ub[mine].float()).sum().backward()
    result.update(bf16_y=yb.detach(), bf16_x_grad=xr.grad)
    return result


def test_two_ranks_equal_batchnorm_on_the_global_batch():
    x, upstream, weight, bias = _data()
    expected = _reference(x, upstream, weight, bias)
    results = run_ranks(_rank_case, WORLD)
    tol = dict(rtol=1e-5, atol=1e-5)
    for rank, got in enumerate(results):
        mine = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(got["y"], expected["y"][mine], **tol)
        torch.testing.assert_close(got["x_grad"], expected["x_grad"][mine], **tol)
        for key in ("w_grad", "b_grad", "running_mean", "running_var"):
            torch.testing.assert_close(got[key], expected[key], **tol, msg=key)
    # bf16 in, bf16 out; statistics in fp32: within bf16 rounding of fp32 BatchNorm on the same (rounded) inputs
    xb, ub, _, _ = _data(torch.bfloat16)
    bn = nn.BatchNorm2d(C)
    xf = xb.float().requires_grad_(True)
    yf = bn(xf)
    (yf * ub.float()).sum().backward()
    for rank, got in enumerate(results):
        mine = slice(rank * B, (rank + 1) * B)
        assert got["bf16_y"].dtype == torch.bfloat16 and got["bf16_x_grad"].dtype == torch.bfloat16
        torch.testing.assert_close(got["bf16_y"].float(), yf.detach()[mine], rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(got["bf16_x_grad"].float(), xf.grad[mine], rtol=2e-2, atol=2e-2)
    assert (results[0]["y"] - expected["y"][:B]).abs().max() < 1e-5  # and local statistics would be far off:
    local = nn.BatchNorm2d(C, momentum=0.2)
    with torch.no_grad():
        local.weight.copy_(weight)
        local.bias.copy_(bias)
    assert (local(x[:B]) - expected["y"][:B]).abs().max() > 1e-2


def test_one_process_function_equals_batchnorm_and_saves_only_the_input():
    """The Function itself (on a one-rank group, where the layer would take plain BatchNorm): forward and
    backward as nn.BatchNorm2d to 1e-5, and what autograd keeps is the input plus three (C,) vectors."""
    x, upstream, weight, bias = _data()
    expected = _reference(x, upstream, weight, bias)
    saved: list[torch.Tensor] = []
    with one_rank_group():
        xr = x.clone().requires_grad_(True)
        w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        rm, rv = torch.zeros(C), torch.ones(C)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = _GlobalBatchNorm.apply(xr, w, b, rm, rv, 1e-5, 0.2, True)
        (y * upstream).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.detach(), expected["y"], **tol)
    torch.testing.assert_close(xr.grad, expected["x_grad"], **tol)
    torch.testing.assert_close(w.grad, expected["w_grad"], **tol)
    torch.testing.assert_close(b.grad, expected["b_grad"], **tol)
    torch.testing.assert_close(rm, 0.2 * x.mean(dim=(0, 2, 3)), **tol)
    assert [t.shape for t in saved] == [x.shape, (C,), (C,), (C,)]  # input, mean, invstd, weight
    assert sum(t.nbytes for t in saved) == x.nbytes + 3 * C * 4


def test_conversion_to_torch_syncbn_keeps_parameters_groups_and_ema_pairs(tmp_path):
    """The CUDA path (``torch.nn.SyncBatchNorm``; forced here, its forward needs CUDA): same parameter and
    buffer objects, checkpoint keys, parameter groups and EMA (student, teacher) pairs; idempotent."""
    from hydra.utils import instantiate

    from tests.conftest import compose_config
    from tests.methods.test_training import SMALL_HEADS

    cfg = compose_config(tmp_path, "method=byol", *SMALL_HEADS["byol"], "data.image_size=8")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    before = model.state_dict(keep_vars=True)
    groups = [[id(p) for p in g["params"]] for g in model.parameter_groups(1e-6)]
    pairs = [[id(p) for p in s.parameters()] + [id(p) for p in t.parameters()] for s, t in model.momentum_pairs()]
    convert_sync_batchnorm(model, use_torch=True)
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, SyncBatchNorm) for m in model.modules())
    assert isinstance(model.backbone.bn1, nn.SyncBatchNorm) and isinstance(model.teacher_backbone.bn1, nn.SyncBatchNorm)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[k] is v for k, v in before.items())
    assert [[id(p) for p in g["params"]] for g in model.parameter_groups(1e-6)] == groups
    assert [[id(p) for p in s.parameters()] + [id(p) for p in t.parameters()] for s, t in model.momentum_pairs()] == pairs
    layers = list(model.modules())
    convert_sync_batchnorm(model)
    assert all(a is b for a, b in zip(layers, model.modules()))


def test_conversion_picks_the_kind_by_device():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert type(convert_sync_batchnorm(net)[1]) is SyncBatchNorm  # CPU parameters: ours
