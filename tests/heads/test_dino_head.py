"""DINO's head with ``use_bn`` (the official ``--use_bn_in_head``): where the BatchNorms go, and the token
BatchNorm iBOT's patch heads need."""

import pytest
import torch
from torch import nn

from ssl_lightning.heads.dino_head import DINOHead, TokenBatchNorm1d


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_batchnorm_after_each_hidden_layer_and_none_after_the_bottleneck(num_layers):
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8, num_layers=num_layers, use_bn=True)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, TokenBatchNorm1d, nn.GELU] * (num_layers - 1) + [nn.Linear]
    assert [type(m) for m in DINOHead(16, 32, 24, 8, num_layers).mlp] == [nn.Linear, nn.GELU] * (num_layers - 1) + [nn.Linear]


def test_token_batchnorm_takes_statistics_over_samples_and_tokens():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6) * 3 + 1  # (B, N, C)
    bn, ref = TokenBatchNorm1d(6), nn.BatchNorm1d(6)
    out = bn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref(x.reshape(20, 6)).view(4, 5, 6))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    # the official iBOT head: BatchNorm1d on (B, C, N)
    torch.testing.assert_close(out, nn.BatchNorm1d(6)(x.transpose(1, 2)).transpose(1, 2))


def test_head_bn_is_checked_and_reaches_the_head():
    from functools import partial

    from ssl_lightning.backbones.resnet import resnet
    from ssl_lightning.config import ConfigError
    from ssl_lightning.methods import DINO

    kwargs = dict(out_dim=32, hidden_dim=16, bottleneck_dim=8)
    method = DINO(resnet("resnet18", cifar_stem=True), partial(torch.optim.AdamW, lr=1e-3), head_bn=True, **kwargs)
    assert sum(isinstance(m, TokenBatchNorm1d) for m in method.head.modules()) == 2
    assert sum(isinstance(m, TokenBatchNorm1d) for m in method.teacher_head.modules()) == 2
    with pytest.raises(ConfigError, match="method.head_bn"):
        DINO(resnet("resnet18", cifar_stem=True), partial(torch.optim.AdamW, lr=1e-3), head_bn="yes", **kwargs)
