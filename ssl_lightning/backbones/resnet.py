"""torchvision ResNets as feature extractors, with the CIFAR stem option."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ssl_lightning.config import check

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def resnet(name: str = "resnet18", cifar_stem: bool = False, zero_init_residual: bool = False,
           channels_last: bool = False) -> nn.Module:
    """A torchvision ResNet with its classifier replaced by ``nn.Identity``: ``(B, 3, H, W) -> (B, num_features)``.

    The module *is* a ``torchvision.models.ResNet``, so its ``state_dict`` loads into a plain torchvision
    model (with ``fc = nn.Identity()``). ``num_features`` is 512 for ResNet-18/34, 2048 for ResNet-50 and up.

    Args:
        name: one of ``resnet18, resnet34, resnet50, resnet101, resnet152``.
        cifar_stem: replace the 7x7/2 convolution and max-pool by a 3x3/1 convolution, the usual stem for
            32x32 images (SimCLR, Chen et al., 2020, Appendix B.9).
        zero_init_residual: start each residual branch's last BN at zero (Goyal et al., 2017).
        channels_last: keep the convolution weights and the inputs in ``torch.channels_last`` (NHWC) memory
            format, the layout tensor-core convolutions (and oneDNN on CPU) run natively; the results are
            the same up to floating-point summation order.
    """
    check(name in RESNETS, "backbone.name", name, f"one of {', '.join(RESNETS)}")
    model = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_to_channels_last)
    return model
