import pytest
import torch

from ssl_lightning.callbacks import ring_enqueue_
from ssl_lightning.methods import MoCo
from ssl_lightning.train import train


def reference_queue(size: int, batches: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """A FIFO written one key at a time: slot ``ptr`` gets the key, ``ptr = (ptr + 1) % size``."""
    queue, ptr = torch.zeros(size, batches[0].shape[1]), 0
    for batch in batches:
        for key in batch:
            queue[ptr] = key
            ptr = (ptr + 1) % size
    return queue, ptr


def test_wrap_around_with_a_batch_that_does_not_divide_the_queue():
    queue, ptr = torch.zeros(10, 1), torch.zeros((), dtype=torch.long)
    for start in (0, 4, 8):  # keys 0..11 in batches of 4 into 10 slots
        ring_enqueue_(queue, ptr, torch.arange(start, start + 4, dtype=torch.float32)[:, None])
    assert queue.squeeze(1).tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert ptr.item() == 2


@pytest.mark.parametrize("size", [1, 7, 16, 50])
def test_any_sequence_of_batch_sizes_matches_a_key_by_key_fifo(size):
    g = torch.Generator().manual_seed(size)
    batches = [torch.randn(int(n), 3, generator=g) for n in torch.randint(1, 23, (12,), generator=g)]
    batches.append(torch.randn(2 * size + 3, 3, generator=g))  # more keys than slots in one call
    queue, ptr = torch.zeros(size, 3), torch.zeros((), dtype=torch.long)
    for batch in batches:
        ring_enqueue_(queue, ptr, batch)
    expected, expected_ptr = reference_queue(size, batches)
    torch.testing.assert_close(queue, expected, rtol=0, atol=0)
    assert ptr.item() == expected_ptr


def test_keys_of_accumulation_micro_steps_are_enqueued_once_after_the_optimizer_step(make_cfg, monkeypatch):
    """4 batches of 8 with accumulate_grad_batches=2: 2 optimizer steps, each enqueueing the 16 keys of its
    two micro-batches, in order, after the step."""
    calls = []
    real = MoCo.enqueue

    def spy(self, keys):
        calls.append((self.trainer.global_step, keys.shape[0]))
        real(self, keys)

    monkeypatch.setattr(MoCo, "enqueue", spy)
    cfg = make_cfg("method=moco", "method.bn_splits=2", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.queue_size=20",
                   "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2", "data.num_samples=32",
                   "data.batch_size=8", "data.image_size=8", "~callbacks", "~logger")
    train(cfg)
    assert calls == [(1, 16), (2, 16)]
