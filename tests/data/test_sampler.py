import pytest
import torch

from ssl_lightning.data import ShardedSampler, TransformedDataset
from ssl_lightning.data import sampler as sampler_mod
from ssl_lightning.data.datasets import synthetic
from ssl_lightning.transforms import MultiViewTransform


def test_same_epoch_same_order_new_epoch_new_order():
    s = ShardedSampler(100, shuffle=True, seed=3)
    s.set_epoch(1)
    a = list(s)
    assert list(s) == a and sorted(a) == list(range(100))
    s.set_epoch(2)
    assert list(s) != a


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_epoch_and_their_batches_union_to_the_big_batch(monkeypatch, world):
    n, batch = 60, 4
    single = ShardedSampler(n, shuffle=True, seed=0, drop_last=True)
    order = list(single)
    shards = []
    for r in range(world):
        monkeypatch.setattr(sampler_mod, "world_size", lambda: world)
        monkeypatch.setattr(sampler_mod, "rank", lambda r=r: r)
        s = ShardedSampler(n, shuffle=True, seed=0, drop_last=True)
        shards.append(list(s))
        assert len(s) == n // world == len(shards[-1])
    assert sorted(sum(shards, [])) == sorted(order[: n // world * world])
    for k in range(len(shards[0]) // batch):  # k-th per-rank batches together = k-th batch of world * batch
        together = sorted(i for shard in shards for i in shard[k * batch : (k + 1) * batch])
        assert together == sorted(order[k * world * batch : (k + 1) * world * batch])


def test_augmentation_is_a_function_of_seed_epoch_and_index_only():
    base = synthetic("train", 16, num_samples=8)
    ds = TransformedDataset(base, MultiViewTransform(size=16))
    s = ShardedSampler(8, shuffle=True, seed=0, with_seed=True)
    keys = list(s)
    first = ds[keys[0]][0]
    torch.manual_seed(1234)  # the global RNG must not matter ...
    torch.rand(100)
    again = ds[keys[0]][0]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    # ... and must not be disturbed
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ds[keys[1]]
    torch.testing.assert_close(torch.rand(3), expected)
    # the two views of one image differ, and another epoch gives other views
    assert not torch.equal(first[0], first[1])
    s.set_epoch(1)
    index, seed = keys[0]
    other = ds[(index, dict(list(s))[index])][0]
    assert not torch.equal(first[0], other[0])


def test_fast_forward_skips_once_and_only_in_its_epoch():
    s = ShardedSampler(20, shuffle=True, seed=0)
    s.set_epoch(3)
    full = list(s)
    s.fast_forward(6, epoch=3)
    assert list(s) == full[6:]
    assert list(s) == full  # once
    s.fast_forward(6, epoch=5)
    assert list(s) == full  # not this epoch
    s.set_epoch(5)
    reference = ShardedSampler(20, shuffle=True, seed=0)
    reference.set_epoch(5)
    assert list(s) == list(reference)[6:]
