"""backbone=timm: any timm model as a backbone, timm ViTs behind our ViT's token interface, local weights."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from ssl_lightning.backbones import TimmBackbone, TimmViT, has_token_interface, timm_backbone
from ssl_lightning.config import ConfigError


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "kwargs", "size"), [
    ("convnext_atto", {}, 32),
    ("resnet18", {}, 32),
    ("mobilenetv3_small_050", {}, 32),  # pre-logits conv head wider than the last stage: head_hidden_size
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}, 32),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 28}, 28),  # register tokens, no class-token position
])
def test_features_are_timms_classifier_free_output(name, kwargs, size):
    backbone = timm_backbone(name, **kwargs).eval()
    reference = timm.create_model(name, num_classes=0, **kwargs).eval()
    reference.load_state_dict(backbone.model.state_dict())  # the weights are timm's, under model.
    x = images(size)
    with torch.no_grad():
        h = backbone(x)
        torch.testing.assert_close(h, reference(x), rtol=0, atol=1e-6)
    assert h.shape == (2, backbone.num_features) and torch.isfinite(h).all()
    assert isinstance(backbone, TimmViT) == name.startswith("vit") == has_token_interface(backbone)


def test_small_images_are_resized_up_to_the_total_stride():
    backbone = timm_backbone("convnext_atto", img_size=16).eval()
    assert backbone.min_input_size == 32
    x = images(16)
    with torch.no_grad():
        up = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(backbone(x), backbone.model(up), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="data.image_size=16 is not allowed with backbone.name=convnext_atto: it downsamples by 32"):
        timm_backbone("convnext_atto", img_size=16, resize_small_inputs=False)


def reference_visible_encoding(model, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """MAE's encoder (facebookresearch/mae models_mae.py forward_encoder) written with timm's own modules:
    embed all patches with positions (timm's _pos_embed), keep [CLS] (and registers) and the visible patches,
    run the blocks and the norm; then [CLS] + visible patches."""
    tokens = model._pos_embed(model.patch_embed(x))  # (B, P + N, D)
    p = model.num_prefix_tokens
    patches = torch.stack([tokens[b, p:][ids_keep[b]] for b in range(x.shape[0])])  # (B, N', D)
    encoded = model.norm(model.blocks(model.norm_pre(torch.cat([tokens[:, :p], patches], dim=1))))
    return torch.cat([encoded[:, :1], encoded[:, p:]], dim=1)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 28, "depth": 2}),
])
def test_timm_vit_encodes_only_the_visible_patches(name, kwargs):
    backbone = timm_backbone(name, model_args={"depth": kwargs.pop("depth")}, **kwargs).eval()
    n = backbone.num_patches
    ids_keep = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(s))[: n // 4] for s in range(2)])
    x = images(backbone.image_size)
    with torch.no_grad():
        tokens = backbone.forward_tokens(x, ids_keep)
        torch.testing.assert_close(tokens, reference_visible_encoding(backbone.model, x, ids_keep), rtol=0, atol=1e-5)
        assert tokens.shape == (2, 1 + n // 4, backbone.embed_dim)
        full = backbone.forward_tokens(x)
        everything = reference_visible_encoding(backbone.model, x, torch.arange(n).expand(2, -1))
        torch.testing.assert_close(full, everything, rtol=0, atol=1e-5)


def test_timm_vit_mask_token_replaces_masked_patch_embeddings():
    backbone = timm_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8).eval()
    x, mask_token = images(32), torch.randn(1, 1, backbone.embed_dim)
    masked = torch.zeros(2, backbone.num_patches, dtype=torch.bool)
    masked[0, :5] = masked[1, 7:] = True
    with torch.no_grad():
        plain, replaced = backbone.patch_tokens(x), backbone.patch_tokens(x, masked, mask_token)
        pos = backbone.model.pos_embed[:, 1:]
        torch.testing.assert_close(replaced[masked], (mask_token + pos).expand(2, -1, -1)[masked])
        torch.testing.assert_close(replaced[~masked], plain[~masked])
        no_mask = backbone.forward_tokens(x, bool_masked_pos=torch.zeros_like(masked), mask_token=mask_token)
        torch.testing.assert_close(backbone.pool(no_mask), backbone.model(x), rtol=0, atol=1e-6)


def test_local_checkpoint_is_filtered_and_loaded_strictly(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10).eval()
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))  # with its classifier, as timm publishes
    backbone = timm_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, model_args={"depth": 2},
                             checkpoint=str(tmp_path / "vit.safetensors")).eval()
    x = images(32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), source.forward_head(source.forward_features(x), pre_logits=True))
    # the same weights for 64-px images: timm's filter resamples the position embedding
    larger = timm_backbone("vit_tiny_patch16_224", img_size=64, patch_size=8, model_args={"depth": 2},
                           checkpoint=str(tmp_path / "vit.safetensors"))
    assert larger.num_patches == 64

    torch.save({"model": timm.create_model("resnet18").state_dict()}, tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match=r"backbone.checkpoint=.*r18.pth.: its weights do not fit timm model 'convnext_atto'"):
        timm_backbone("convnext_atto", checkpoint=str(tmp_path / "r18.pth"))  # timm's own filter refuses it
    with pytest.raises(ConfigError, match=r"backbone.checkpoint=.*r18.pth.: architecture mismatch: the weights do not "
                                          r"fit timm model 'resnet34': \d+ missing weights"):
        timm_backbone("resnet34", checkpoint=str(tmp_path / "r18.pth"))


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match=r"backbone.name='convnext_atoo' is not allowed: a timm model name \(close matches: convnext_atto"):
        timm_backbone("convnext_atoo")


def test_pretrained_uses_timms_download_path_and_fails_offline_with_a_message(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never download in tests
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="backbone.pretrained=true: timm could not fetch the weights of 'resnet18'"):
        timm_backbone("resnet18", pretrained=True)


def test_masked_image_methods_reject_timm_models_without_tokens(make_cfg):
    from ssl_lightning.train import train

    with pytest.raises(ConfigError, match="timm model 'convnext_atto' has none .it is a ConvNeXt, not a timm VisionTransformer"):
        train(make_cfg("method=mae", "backbone=timm", "backbone.name=convnext_atto", "augment.patch_size=4",
                       "trainer.max_epochs=1"))


def test_vit_image_size_must_match_the_data(make_cfg):
    from ssl_lightning.train import train

    with pytest.raises(ConfigError, match="data.image_size=16 is not allowed: the backbone .a ViT. is built for 32x32 images"):
        train(make_cfg("method=mae", "backbone=timm", "backbone.name=vit_tiny_patch16_224", "backbone.img_size=32",
                       "backbone.patch_size=4", "trainer.max_epochs=1"))


def test_is_a_plain_module_for_the_rest_of_the_code():
    backbone = timm_backbone("resnet18")
    assert isinstance(backbone, TimmBackbone) and backbone.num_features == 512
    assert all(k.startswith("model.") for k in backbone.state_dict())


def test_simclr_trains_a_timm_convnext(make_cfg):
    """The issue's `method=simclr backbone=timm backbone.name=convnext_atto`, on tiny made-up 16-px data (resized
    up to ConvNeXt's stride of 32): the run trains, evaluates and checkpoints a timm model."""
    from ssl_lightning.checkpoint import load_pretrained
    from ssl_lightning.train import train

    cfg = make_cfg("backbone=timm", "backbone.name=convnext_atto", "method.proj_hidden_dim=32", "method.proj_output_dim=16",
                   "data.num_samples=32", "data.batch_size=16", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
                   "callbacks.knn.k=5", "~callbacks.embedding_projector", "~callbacks.view_grid")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and 0 <= metrics["val/knn_top1"] <= 100
    trained = load_pretrained(f"{cfg.paths.output_dir}/checkpoints/last.ckpt").module
    assert isinstance(trained, TimmBackbone) and trained.name == "convnext_atto" and trained.num_features == 320
    assert cfg.backbone.patch_size is None  # ConvNeXt has no patches: the resolver leaves it unset
