"""SplitBatchNorm2d (MoCo's one-device Shuffle-BN in one backbone call): outputs and gradients equal one
nn.BatchNorm2d call per group, the running statistics move as the authors' SplitBatchNorm moves them, the
conversion keeps every parameter object, and a backbone is called once per view."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ssl_lightning.nn import SplitBatchNorm2d, convert_split_batchnorm, split_forward
from ssl_lightning.nn.split_batchnorm import batchnorm_splits

S, N, C = 4, 12, 5


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, 3, 4, generator=g) * 3 + 1
    upstream = torch.randn(x.shape, generator=g)
    return x, upstream


def _bn():
    bn = nn.BatchNorm2d(C, momentum=0.2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(C, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(C, generator=g) - 0.5)
        bn.running_mean.copy_(torch.randn(C, generator=g))
        bn.running_var.copy_(torch.rand(C, generator=g) + 0.5)
    return bn


def _per_group(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The slow reference: one nn.BatchNorm2d call per group, sample n in group n % S."""
    out = torch.empty_like(x)
    for g in range(S):
        out[g::S] = bn(x[g::S])
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batchnorm_equals_batchnorm_per_group(channels_last):
    x, upstream = _data()
    ref_bn = _bn()
    split = copy.deepcopy(ref_bn)
    assert convert_split_batchnorm(wrapper := nn.Sequential(split)) and isinstance(wrapper[0], SplitBatchNorm2d)
    split = wrapper[0]
    rm0, rv0 = ref_bn.running_mean.clone(), ref_bn.running_var.clone()

    x_ref = x.clone().requires_grad_()
    y_ref = _per_group(ref_bn, x_ref)
    (y_ref * upstream).sum().backward()

    x_split = x.clone()
    if channels_last:
        x_split = x_split.contiguous(memory_format=torch.channels_last)
    x_split.requires_grad_()
    with batchnorm_splits(split, S):
        y = split(x_split)
    (y * upstream).sum().backward()

    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_split.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.weight.grad, ref_bn.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.bias.grad, ref_bn.bias.grad, rtol=1e-5, atol=1e-5)
    # the authors' update: once per call, to the mean over groups of (1 - m) r + m stat_g (var unbiased)
    groups = x.view(N // S, S, C, -1).transpose(0, 1)  # (S, N/S, C, HW)
    mean_g = groups.mean(dim=(1, 3))  # (S, C)
    var_g = groups.transpose(1, 2).reshape(S, C, -1).var(dim=2, unbiased=True)
    torch.testing.assert_close(split.running_mean, (0.8 * rm0 + 0.2 * mean_g).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split.running_var, (0.8 * rv0 + 0.2 * var_g).mean(0), rtol=1e-5, atol=1e-6)
    assert split.num_batches_tracked.item() == 1
    assert split.num_splits == 1  # the block restores whole-batch statistics


def test_split_batchnorm_outside_the_block_and_in_eval_is_batchnorm():
    x, _ = _data()
    bn = _bn()
    wrapper = nn.Sequential(copy.deepcopy(bn))
    convert_split_batchnorm(wrapper)
    torch.testing.assert_close(wrapper(x), bn(x), rtol=0, atol=0)  # num_splits 1: whole-batch statistics
    bn.eval(), wrapper.eval()
    with batchnorm_splits(wrapper, S):
        torch.testing.assert_close(wrapper(x), bn(x), rtol=0, atol=0)  # running statistics, no groups


def test_split_batchnorm_refuses_a_batch_it_cannot_split():
    wrapper = nn.Sequential(_bn())
    convert_split_batchnorm(wrapper)
    with batchnorm_splits(wrapper, 5), pytest.raises(ValueError, match="12 images cannot be split into 5"):
        wrapper(_data()[0])


def test_conversion_keeps_parameter_and_buffer_objects_and_state_dict():
    net = nn.Sequential(nn.Conv2d(3, C, 3), _bn(), nn.Sequential(nn.BatchNorm2d(C)))
    before = {name: t for name, t in [*net.named_parameters(), *net.named_buffers()]}
    keys = list(net.state_dict())
    assert convert_split_batchnorm(net)
    assert isinstance(net[1], SplitBatchNorm2d) and isinstance(net[2][0], SplitBatchNorm2d)
    after = {name: t for name, t in [*net.named_parameters(), *net.named_buffers()]}
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    assert list(net.state_dict()) == keys


class _OtherBatchNorm(nn.BatchNorm2d):
    """A BatchNorm subclass the conversion must not touch (as timm's BatchNormAct2d)."""


def test_backbone_with_other_batchnorms_falls_back_to_one_call_per_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(C, C, 1), _OtherBatchNorm(C), nn.ReLU(), nn.Conv2d(C, C, 1), _bn(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    ref = copy.deepcopy(net)
    assert not convert_split_batchnorm(net)  # the other type stays: split_forward calls once per group
    assert type(net[1]) is _OtherBatchNorm
    x, _ = _data()
    expected = torch.empty(N, C)
    for g in range(S):
        expected[g::S] = ref(x[g::S])
    torch.testing.assert_close(split_forward(net, x, S, one_call=False), expected, rtol=1e-5, atol=1e-6)


def test_moco_runs_its_backbone_once_per_view_with_split_statistics(make_cfg):
    from hydra.utils import instantiate

    cfg = make_cfg("method=moco", "method.bn_splits=4", "method.proj_hidden_dim=32", "method.proj_output_dim=16",
                   "method.queue_size=16", "data.image_size=16")
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).train()
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    assert model._split_in_one_call and any(isinstance(m, SplitBatchNorm2d) for m in model.key_backbone.modules())
    calls = {"query": 0, "key": 0}
    model.backbone.register_forward_hook(lambda *_: calls.__setitem__("query", calls["query"] + 1))
    model.key_backbone.register_forward_hook(lambda *_: calls.__setitem__("key", calls["key"] + 1))
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(8, 3, 16, 16, generator=g), torch.randn(8, 3, 16, 16, generator=g)
    reference = copy.deepcopy(model.backbone)
    out = model.training_step(((x1, x2), torch.zeros(8, dtype=torch.long)), 0)
    assert calls == {"query": 1, "key": 1}
    expected = torch.empty_like(out["h"])
    for grp in range(4):
        expected[grp::4] = reference(x1[grp::4])
    torch.testing.assert_close(out["h"], expected, rtol=1e-5, atol=1e-5)
    assert (out["h"] - reference(x1)).abs().max() > 1e-3  # whole-batch statistics would differ
