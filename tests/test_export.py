"""python -m ssl_lightning.export: the backbone alone, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from ssl_lightning.backbones import resnet, vit
from ssl_lightning.export import main as export


def backbone_weights(ckpt_path) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors of a Lightning checkpoint, read without ssl_lightning's loader."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def features(model: nn.Module, seed: int = 0, size: int = 16) -> torch.Tensor:
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_resnet_round_trip_into_plain_torchvision(pretrained_resnet, tmp_path, capsys):
    ckpt = pretrained_resnet / "checkpoints" / "last.ckpt"
    out = tmp_path / "simclr_r18.pt"
    export([f"ckpt={ckpt}", f"out={out}"])
    assert f"wrote {out}" in capsys.readouterr().out

    # the documented usage: a plain torchvision ResNet-18 with the CIFAR stem the sidecar names
    meta = json.loads((tmp_path / "simclr_r18.pt.json").read_text())
    assert meta["backbone"] == {"_target_": "ssl_lightning.backbones.resnet", "name": "resnet18", "cifar_stem": True,
                                "zero_init_residual": True, "channels_last": False}  # SimCLR's recipe
    assert meta["method"] == "SimCLR" and meta["num_features"] == 512 and meta["modality"] == "image"
    assert meta["source"]["global_step"] == 4 and meta["source"]["checkpoint"] == str(ckpt.resolve())
    assert meta["preprocessing"] == {"image_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(out, weights_only=True))

    reference = resnet("resnet18", cifar_stem=True)
    reference.load_state_dict(backbone_weights(ckpt))
    torch.testing.assert_close(features(model), features(reference), rtol=0, atol=0)
    assert not torch.allclose(features(model), features(resnet("resnet18", cifar_stem=True)))  # not a fresh init


def test_vit_round_trip(pretrained_vit, tmp_path):
    ckpt = pretrained_vit / "checkpoints" / "last.ckpt"
    export([f"ckpt={ckpt}", f"out={tmp_path / 'vit.pt'}"])
    meta = json.loads((tmp_path / "vit.pt.json").read_text())
    args = {k: v for k, v in meta["backbone"].items() if k != "_target_"}
    assert meta["backbone"]["_target_"] == "ssl_lightning.backbones.vit" and args["depth"] == 2
    model = vit(**args)
    model.load_state_dict(torch.load(tmp_path / "vit.pt", weights_only=True))

    reference = vit(**args)
    reference.load_state_dict(backbone_weights(ckpt))
    torch.testing.assert_close(features(model), features(reference), rtol=0, atol=0)


def test_without_out_the_export_goes_into_the_run_dir(pretrained_resnet, capsys):
    """Nothing is written into the working directory (the repository root) unless asked."""
    ckpt = pretrained_resnet / "checkpoints" / "last.ckpt"
    export([f"ckpt={ckpt}", "prefix=backbone"])
    out = pretrained_resnet / "export" / "backbone.pt"
    assert f"wrote {out}" in capsys.readouterr().out
    assert (pretrained_resnet / "export" / "backbone.pt.json").is_file()
    torch.load(out, weights_only=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["out=x.pt"], "Configuration error: ckpt is required; usage: python -m ssl_lightning.export ckpt=PATH [out=FILE]"),
    (["ckpt=x.ckpt", "out=y.pt", "fromat=1"], "Configuration error: Key 'fromat' not in 'ExportArgs'"),
    (["ckpt=/no/such.ckpt", "out=y.pt"], "Configuration error: ckpt='/no/such.ckpt' is not a file"),
])
def test_bad_arguments_fail_in_one_line(argv, message):
    with pytest.raises(SystemExit) as info:
        export(argv)
    assert str(info.value).startswith(message)
