"""The text transformer: shapes, causal and padding masks, weight-decay exclusions."""

import pytest
import torch

from ssl_lightning.backbones import TextTransformer
from ssl_lightning.config import ConfigError
from ssl_lightning.optim import param_groups


def tiny(**kwargs) -> TextTransformer:
    torch.manual_seed(0)
    return TextTransformer(**{"vocab_size": 40, "max_seq_len": 24, "embed_dim": 32, "depth": 2, "num_heads": 2,
                              "dropout": 0.0, **kwargs}).eval()


def test_shapes_and_num_features():
    model = tiny()
    out = model(torch.randint(0, 40, (3, 24)))
    assert out.shape == (3, 24, model.num_features) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="longer than max_seq_len=24"):
        model(torch.randint(0, 40, (1, 25)))
    no_bias = tiny(bias=False)  # nanoGPT's variant: no biases in linears and LayerNorms
    assert not [n for n, _ in no_bias.named_parameters() if n.endswith("bias")]
    assert no_bias(torch.randint(0, 40, (3, 24))).shape == (3, 24, 32)


def test_causal_attention_never_lets_a_token_see_the_future():
    model = tiny()
    ids = torch.randint(3, 40, (2, 20))
    changed = ids.clone()
    changed[:, 12] = (ids[:, 12] + 1 - 3) % 37 + 3
    a, b = model(ids, is_causal=True), model(changed, is_causal=True)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    # bidirectional attention does see it (so the check above can fail)
    assert not torch.allclose(model(ids)[:, :12], model(changed)[:, :12])


def test_padding_is_not_attended():
    model = tiny()
    ids = torch.randint(3, 40, (1, 16))
    padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], dim=1)
    other_pad = torch.cat([ids, torch.full((1, 8), 7)], dim=1)
    mask = padded == 0
    for causal in (False, True):
        a = model(padded, padding_mask=mask, is_causal=causal)[:, :16]
        b = model(other_pad, padding_mask=mask, is_causal=causal)[:, :16]
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(a, model(ids, is_causal=causal), rtol=0, atol=1e-5)


def test_no_weight_decay_on_embeddings_biases_and_norms():
    model = tiny()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"token_embed.weight", "pos_embed.weight", "norm.weight",
                                                         "blocks.0.attn.qkv.bias"}
    assert all(p.ndim == 2 and "embed" not in names[id(p)] for p in decay["params"])


def test_decay_embeddings_decays_every_matrix_as_nanogpt():
    model = tiny(decay_embeddings=True, bias=False)
    decay, no_decay = param_groups(model, 0.1)
    matrices = {n for n, p in model.named_parameters() if p.ndim == 2}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == matrices >= {"token_embed.weight", "pos_embed.weight"}
    assert all(p.ndim == 1 for p in no_decay["params"])  # the LayerNorm weights only


def test_bad_sizes_are_named():
    with pytest.raises(ConfigError, match="backbone.vocab_size=None is not allowed"):
        TextTransformer(vocab_size=None, max_seq_len=8)
    with pytest.raises(ConfigError, match="backbone.num_heads=3 is not allowed: a divisor of embed_dim=32"):
        TextTransformer(vocab_size=10, max_seq_len=8, embed_dim=32, num_heads=3)
