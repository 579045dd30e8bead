"""I-JEPA's multi-block masks: block counts, scales and aspect ratios within bounds, context disjoint from targets."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.transforms import MultiBlockMasking, MultiBlockTransform


def as_block(ids: torch.Tensor, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a set of row-major indices that must fill a rectangle exactly."""
    rows, cols = (ids // width).tolist(), (ids % width).tolist()
    top, left = min(rows), min(cols)
    h, w = max(rows) - top + 1, max(cols) - left + 1
    assert h * w == len(ids) == len(set(ids.tolist())), "a target block is a full rectangle"
    return top, left, h, w


def draw(masking, batches=30, batch_size=8, grid=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [masking(batch_size, grid, grid, g) for _ in range(batches)]


def test_official_settings_on_the_16x16_grid():
    """The in1k_vith14 config: 4 target blocks of one size per batch, scale and aspect within the ranges up to the
    rounding of each side (|side - exact side| <= 1/2), the context disjoint from every target and inside one
    square block of scale 0.85-1 (sides capped at 15), fixed sizes per batch."""
    masking = MultiBlockMasking()  # num_targets 4, target (0.15, 0.2) x (0.75, 1.5), context (0.85, 1.0), min_keep 10
    masking.validate(16, 16)
    n = 256
    for context_ids, target_ids in draw(masking):
        B, M, Nt = target_ids.shape
        assert (B, M) == (8, 4) and context_ids.shape[0] == 8 and context_ids.dtype == target_ids.dtype == torch.int64
        sizes = set()
        for b in range(B):
            for m in range(M):
                _, _, h, w = as_block(target_ids[b, m], 16)
                sizes.add((h, w))
                # n = int(N s) patches with s in [0.15, 0.2]; h ~ sqrt(n r), w ~ sqrt(n / r) with r in [0.75, 1.5]
                assert (h + 0.5) * (w + 0.5) >= int(n * 0.15) and (h - 0.5) * (w - 0.5) <= int(n * 0.2)
                assert (h + 0.5) / (w - 0.5) >= 0.75 and (h - 0.5) / (w + 0.5) <= 1.5
            ctx = set(context_ids[b].tolist())
            assert len(ctx) == context_ids.shape[1] > 10
            assert not ctx & set(target_ids[b].flatten().tolist()), "context and targets are disjoint"
            rows, cols = [i // 16 for i in ctx], [i % 16 for i in ctx]
            side = max(max(rows) - min(rows), max(cols) - min(cols)) + 1
            assert side <= 15  # one square block of round(sqrt(int(256 x [0.85, 1]))) = 13-15 (capped) patches
        assert len(sizes) == 1, "one target block size per batch"
        h, w = sizes.pop()
        assert Nt == h * w
    assert masking.relaxed == 0


def test_context_is_the_block_minus_the_targets_cut_to_the_shortest_of_the_batch():
    masking = MultiBlockMasking()
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    context_ids, target_ids = masking(6, 16, 16, g)
    # replay the same draws to get every image's full context list
    g.set_state(state)
    th, tw = masking.block_size(float(torch.rand((), generator=g)), masking.target_scale, masking.target_aspect, 16, 16)
    ch, cw = masking.block_size(float(torch.rand((), generator=g)), masking.context_scale, (1.0, 1.0), 16, 16)
    full = []
    for _ in range(6):
        blocks = [masking._place(th, tw, 16, 16, g) for _ in range(4)]
        full.append(masking._place(ch, cw, 16, 16, g, exclude=blocks).flatten().nonzero().squeeze(1))
    assert context_ids.shape[1] == min(len(f) for f in full)
    for b in range(6):
        assert torch.equal(context_ids[b], full[b][: context_ids.shape[1]])  # first patches in raster order
        assert target_ids.shape[2] == th * tw


def test_blocks_reach_the_last_row_and_column():
    """Placement is uniform over every fitting position (the official randint never reaches the last one)."""
    masking = MultiBlockMasking()
    covered = set()
    for _, target_ids in draw(masking, batches=20):
        covered |= set(target_ids.flatten().tolist())
    assert 255 in covered and 15 in covered and 240 in covered


def test_small_grid_with_scaled_min_keep():
    """The digits default: an 8x8 grid, min_keep null -> int(10 x 64 / 256) = 2."""
    masking = MultiBlockMasking(min_keep=None)
    masking.validate(8, 8)
    assert masking.keep(8, 8) == 2 and masking.keep(16, 16) == 10
    for context_ids, target_ids in draw(masking, grid=8):
        assert context_ids.shape[1] > 2 and target_ids.shape[1] == 4
        for b in range(target_ids.shape[0]):
            assert not set(context_ids[b].tolist()) & set(target_ids[b].flatten().tolist())
            for m in range(4):
                as_block(target_ids[b, m], 8)


def test_crowded_grid_relaxes_the_context_constraint_like_the_official_sampler():
    """Targets covering the whole context block: after 20 failed draws one target stops constraining the
    context (the last first), so sampling ends, the context overlaps some target, and it is counted."""
    masking = MultiBlockMasking(num_targets=8, target_scale=(0.5, 0.5), target_aspect=(1.0, 1.0), min_keep=1)
    masking.validate(4, 4)
    context_ids, target_ids = masking(4, 4, 4, torch.Generator().manual_seed(0))
    assert context_ids.shape[1] > 1 and masking.relaxed > 0


def test_the_same_key_gives_the_same_batch_masks():
    transform = MultiBlockTransform(MultiBlockMasking(min_keep=None), patch_size=2, size=16)
    from PIL import Image

    images = [Image.new("RGB", (16, 16), (i * 20, 0, 0)) for i in range(4)]
    torch.manual_seed(0)
    samples = [(transform(im), 0) for im in images]
    (x1, c1, t1), y = transform.collate(samples)
    (x2, c2, t2), _ = transform.collate(samples)
    assert x1.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 0, 0]
    assert torch.equal(c1, c2) and torch.equal(t1, t2)
    torch.manual_seed(1)
    other = [(transform(im), 0) for im in images]
    (_, c3, t3), _ = transform.collate(other)
    assert not (torch.equal(t1, t3) and torch.equal(c1, c3))


@pytest.mark.parametrize(("kwargs", "grid", "message"), [
    ({}, 8, "augment.masking.target_scale=[0.15, 0.2] is not allowed: target blocks that fit the 8x8 patch grid with "
            "more than min_keep=10 patches; the smallest is (3, 3) = 9 patches"),
    ({"min_keep": None}, 2, "target blocks that fit the 2x2 patch grid"),
    ({"min_keep": 200}, 16, "min_keep=200"),
    ({"target_scale": [0.0, 0.2]}, 16, "augment.masking.target_scale=[0.0, 0.2] is not allowed: [min, max] with 0 < min <= max <= 1"),
    ({"target_scale": [0.3, 0.2]}, 16, "augment.masking.target_scale=[0.3, 0.2] is not allowed"),
    ({"context_scale": [0.85, 1.2]}, 16, "augment.masking.context_scale=[0.85, 1.2] is not allowed"),
    ({"target_aspect": [0.0, 1.5]}, 16, "augment.masking.target_aspect=[0.0, 1.5] is not allowed"),
    ({"target_aspect": 1.0}, 16, "augment.masking.target_aspect=1.0 is not allowed"),
    ({"num_targets": 0}, 16, "augment.masking.num_targets=0 is not allowed: an integer >= 1"),
    ({"min_keep": -1}, 16, "augment.masking.min_keep=-1 is not allowed"),
])
def test_bad_mask_settings_are_named(kwargs, grid, message):
    with pytest.raises(ConfigError) as info:
        MultiBlockMasking(**kwargs).validate(grid, grid)
    assert message in str(info.value)
