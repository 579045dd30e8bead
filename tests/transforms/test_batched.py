"""The batched (data.gpu_augment) colour jitter on fixed shapes: the same views as applying each sample's ops
one position at a time (the former computation, kept here as the slow reference), with one HSV round trip and
at most 6 blends per view; constants made once per device."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssl_lightning.transforms import batched
from ssl_lightning.transforms.batched import B, C, H, JITTER, ORDER, S, adjust, augment_views, draw_params
from ssl_lightning.transforms.views import ViewSpec


def reference_jitter(x: torch.Tensor, params: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Every op at every position on the whole batch, each sample keeping the op of its order there."""
    for position in range(4):
        for op, index in enumerate((B, C, S, H)):
            if spec.jitter[op] == 0:
                continue
            here = (params[:, ORDER + position] == op).view(-1, 1, 1, 1)
            x = torch.where(here, adjust(x, op, params[:, index].view(-1, 1, 1, 1)), x)
    return x


def _batch(spec: ViewSpec, n: int = 48):
    torch.manual_seed(0)
    params = torch.stack([draw_params(spec) for _ in range(n)])
    orders = list(itertools.permutations(range(4)))  # every order present
    params[:, ORDER : ORDER + 4] = torch.tensor([orders[i % 24] for i in range(n)], dtype=params.dtype)
    x = torch.rand(n, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    return x, params


@pytest.mark.parametrize("jitter", [(0.4, 0.4, 0.4, 0.1), (0.8, 0.8, 0.8, 0.2), (0.4, 0.0, 0.4, 0.0)])
def test_fixed_shape_jitter_equals_the_op_by_position_reference(jitter, monkeypatch):
    spec = ViewSpec(size=10, jitter=jitter, jitter_prob=1.0)
    x, params = _batch(spec)
    calls = {"hsv": 0, "gray": 0}
    real_hsv, real_gray = batched._rgb_to_hsv, batched._gray
    monkeypatch.setattr(batched, "_rgb_to_hsv", lambda t: calls.__setitem__("hsv", calls["hsv"] + 1) or real_hsv(t))
    monkeypatch.setattr(batched, "_gray", lambda t: calls.__setitem__("gray", calls["gray"] + 1) or real_gray(t))
    got = batched._jitter_fixed_shapes(x, params, spec)
    assert calls == ({"hsv": 1, "gray": 6} if jitter[3] else {"hsv": 0, "gray": 4})  # was 4 and 8 (12 full-batch ops)
    monkeypatch.undo()
    expected = reference_jitter(x, params, spec)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got - x).abs().max() > 0.05  # the jitter did something


def test_whole_views_grouped_and_fixed_shapes_agree_and_constants_are_cached():
    spec = ViewSpec(size=10)
    x, params = _batch(spec)
    params[::3, JITTER] = 0.0  # some samples without jitter
    crops = (x * 255).round().to(torch.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    grouped = augment_views(crops, params, spec, mean, std, grouped=True)
    whole = augment_views(crops, params, spec, mean, std, grouped=False)
    torch.testing.assert_close(whole, grouped, rtol=0, atol=1e-5)
    cached = batched.channel_constant(mean, whole)
    assert cached is batched.channel_constant(mean, whole) and cached.shape == (1, 3, 1, 1)
