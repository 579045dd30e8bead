"""The official inits of MAE, MoCo v3 and BEiT (``VisionTransformer(init=...)``) and the configs selecting them."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from ssl_lightning.backbones.vit import VisionTransformer
from ssl_lightning.config import ConfigError


def make(init: str, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=4, embed_dim=96, depth=4, num_heads=12, init=init, **kw)


def test_mocov3_init_qkv_as_three_matrices_tiny_cls_zero_patch_bias():
    vit = make("mocov3")
    w = vit.blocks[0].attn.qkv.weight  # (3D, D)
    bound3 = math.sqrt(6 / (96 + 96))  # each of q, k, v a (D, D) Xavier-uniform matrix
    assert w.abs().max() <= bound3 and w.abs().max() > math.sqrt(6 / (3 * 96 + 96))  # wider than one (3D, D) matrix
    assert vit.cls_token.std() < 1e-5
    assert torch.count_nonzero(vit.patch_embed.bias) == 0
    assert torch.count_nonzero(vit.blocks[0].attn.qkv.bias) == 0


def test_beit_init_truncated_and_rescaled_per_depth():
    vit = make("beit")
    assert vit.blocks[0].mlp[0].weight.abs().max() <= 0.02 and torch.count_nonzero(vit.patch_embed.bias) == 0
    for layer_id, block in enumerate(vit.blocks, start=1):
        scale = math.sqrt(2 * layer_id)
        assert block.attn.proj.weight.abs().max() <= 0.02 / scale + 1e-7
        assert block.mlp[2].weight.abs().max() <= 0.02 / scale + 1e-7
        assert block.attn.proj.weight.abs().max() > 0.015 / scale  # rescaled, not zeroed
    deep, shallow = vit.blocks[3].attn.proj.weight.std().item(), vit.blocks[0].attn.proj.weight.std().item()
    assert deep / shallow == pytest.approx(math.sqrt(1 / 4), rel=0.15)


def test_mae_init_is_the_default_and_unknown_inits_are_refused():
    assert make("mae").cls_token.std().item() == pytest.approx(0.02, rel=0.5)
    with pytest.raises(ConfigError, match="backbone.init"):
        make("timm")


def test_recipes_select_the_official_vit(make_cfg):
    mocov3 = make_cfg("method=mocov3_vit", "data.image_size=32")
    assert mocov3.backbone.init == "mocov3" and mocov3.backbone.num_heads == 12
    vit = instantiate(mocov3.backbone)
    assert vit.blocks[0].attn.num_heads == 12 and vit.embed_dim == 384
    beit = make_cfg("method=beit")
    assert beit.backbone.init == "beit" and beit.backbone.drop_path == 0.1
    assert make_cfg("method=mae").backbone.drop_path == 0.0 and make_cfg("method=mae").backbone.init == "mae"


def test_mocov3_vit_freezes_the_whole_patch_projection(make_cfg):
    cfg = make_cfg("method=mocov3_vit", "backbone=vit_tiny", "+backbone.depth=1", "method.proj_hidden_dim=32",
                   "method.pred_hidden_dim=32", "method.proj_output_dim=16")
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    assert not model.backbone.patch_embed.weight.requires_grad and not model.backbone.patch_embed.bias.requires_grad
    assert torch.count_nonzero(model.backbone.patch_embed.bias) == 0
