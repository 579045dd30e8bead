"""python -m ssl_lightning.export format=safetensors|timm: the exported weights reload into the target library's
model (safetensors -> torchvision, timm -> timm.create_model) and give our checkpoint's features (1e-5)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from ssl_lightning.backbones import resnet, timm_backbone
from ssl_lightning.checkpoint import PretrainedBackbone, export, load_pretrained
from ssl_lightning.export import main as export_main
from tests.conftest import compose_config


def features(model: nn.Module, size: int = 16, seed: int = 0) -> torch.Tensor:
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def from_timm_file(out, sidecar) -> nn.Module:
    """The documented way back into timm: the create_model call the sidecar names."""
    meta = json.loads(sidecar.read_text())["timm"]
    model = timm.create_model(meta["model"], pretrained=True, pretrained_cfg_overlay=dict(file=str(out)),
                              num_classes=0, **meta["model_args"])
    strict = timm.create_model(meta["model"], num_classes=0, **meta["model_args"])
    state = load_file(str(out)) if str(out).endswith(".safetensors") else torch.load(out, weights_only=True)
    strict.load_state_dict(state)  # every key fits, nothing left over
    size = meta["model_args"].get("img_size", 32)
    torch.testing.assert_close(features(model, size), features(strict, size), rtol=0, atol=0)
    return model


def test_our_vit_goes_to_timm_vision_transformer(pretrained_vit, tmp_path, capsys):
    ckpt = pretrained_vit / "checkpoints" / "last.ckpt"
    out = tmp_path / "vit.safetensors"
    export_main([f"ckpt={ckpt}", f"out={out}", "format=timm"])
    assert "load it with: timm.create_model('vit_base_patch16_224', pretrained=True" in capsys.readouterr().out
    ours = load_pretrained(ckpt).module
    model = from_timm_file(out, tmp_path / "vit.safetensors.json")
    assert isinstance(model, timm.models.VisionTransformer) and model.patch_embed.patch_size == (4, 4)
    torch.testing.assert_close(features(model), features(ours), rtol=0, atol=1e-5)
    # and ssl_lightning reads the timm file back (as backbone=timm) for evaluation
    again = load_pretrained(out).module
    torch.testing.assert_close(features(again), features(ours), rtol=0, atol=1e-5)


def test_our_mean_pooled_vit_keeps_its_pooling_in_timm(tmp_path):
    from ssl_lightning.backbones import vit

    ours = vit("tiny", image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, global_pool="mean")
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))  # norms away from (1, 0)
    config = {"_target_": "ssl_lightning.backbones.vit", "size": "tiny", "image_size": 16, "patch_size": 4,
              "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "mean"}
    out, sidecar = export(PretrainedBackbone(ours, config, "MAE", "image"), tmp_path / "vit.pt", "timm")
    torch.testing.assert_close(features(from_timm_file(out, sidecar)), features(ours), rtol=0, atol=1e-5)


def test_torchvision_resnet_goes_to_timm_resnet(tmp_path):
    ours = resnet("resnet18")
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, nn.BatchNorm2d):  # running statistics away from (0, 1)
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    config = {"_target_": "ssl_lightning.backbones.resnet", "name": "resnet18", "cifar_stem": False}
    out, sidecar = export(PretrainedBackbone(ours, config, "SimCLR", "image"), tmp_path / "r18.pt", "timm")
    model = from_timm_file(out, sidecar)
    torch.testing.assert_close(features(model, 64), features(ours, 64), rtol=0, atol=1e-5)


def test_resnet_with_cifar_stem_cannot_go_to_timm_but_goes_to_safetensors(pretrained_resnet, tmp_path):
    ckpt = pretrained_resnet / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as info:
        export_main([f"ckpt={ckpt}", f"out={tmp_path / 'r18.pt'}", "format=timm"])
    assert str(info.value).startswith("Configuration error: format=timm is not allowed for this backbone: a ResNet "
                                      "with the CIFAR stem")

    out = tmp_path / "r18.safetensors"
    export_main([f"ckpt={ckpt}", f"out={out}", "format=safetensors"])
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool, model.fc = nn.Identity(), nn.Identity()
    model.load_state_dict(load_file(str(out)))
    ours = load_pretrained(ckpt).module
    torch.testing.assert_close(features(model), features(ours), rtol=0, atol=0)
    torch.testing.assert_close(features(load_pretrained(out).module), features(ours), rtol=0, atol=0)  # eval reads it


def test_unknown_format_and_a_safetensors_file_without_its_suffix_are_named():
    with pytest.raises(SystemExit) as info:
        export_main(["ckpt=x.ckpt", "out=y.pt", "format=onnx"])
    assert str(info.value) == "Configuration error: format='onnx' is not allowed: one of torch, safetensors, timm"
    with pytest.raises(SystemExit) as info:
        export_main(["ckpt=x.ckpt", "out=y.pt", "format=safetensors"])
    assert str(info.value).startswith("Configuration error: out='y.pt' is not allowed with format=safetensors: a file "
                                      "name ending in .safetensors")


@pytest.mark.slow  # about 20 s of CPU: a 12-block ViT on 224-px images
def test_timm_vit_pretrained_with_mae_at_224_loads_back_into_timm(tmp_path):
    """The issue's command `method=mae backbone=timm backbone.name=vit_tiny_patch16_224 data.image_size=224`,
    shrunk (2 steps, a 1-block decoder), then export format=timm and timm.create_model."""
    from ssl_lightning.train import train

    run = tmp_path / "run"
    metrics = train(compose_config(
        run, "method=mae", "backbone=timm", "backbone.name=vit_tiny_patch16_224", "data.image_size=224",
        "data.num_samples=8", "data.batch_size=4", "method.decoder_dim=32", "method.decoder_depth=1",
        "method.decoder_num_heads=2", "method.grid_images=0", "trainer.max_epochs=1", "~callbacks.knn",
        "~callbacks.linear_probe", "~callbacks.view_grid", "~callbacks.embedding_projector", "~callbacks.collapse"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "mae_vit_tiny.safetensors"
    export_main([f"ckpt={ckpt}", f"out={out}", "format=timm"])
    model = timm.create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)),
                              num_classes=0)
    ours = load_pretrained(ckpt).module
    fresh = timm_backbone("vit_tiny_patch16_224", img_size=224)
    torch.testing.assert_close(features(model, 224), features(ours, 224), rtol=0, atol=1e-5)
    assert not torch.allclose(features(fresh, 224), features(ours, 224))
