"""HostSyncGuard raises on every operation that would synchronise a CUDA step, and on nothing else."""

from __future__ import annotations

import pytest
import torch

from ssl_lightning.sync_guard import HostSyncError, HostSyncGuard

torch.manual_seed(0)
X = torch.randn(6, 3, requires_grad=True)  # a "device" tensor: made before the step
MASK = X.detach()[:, 0] > 0

SYNCS = {
    "item": lambda: X.sum().item(),
    "float": lambda: float(X.sum()),
    "bool (if t:)": lambda: bool(X.sum() > 0),
    "tolist": lambda: X.tolist(),
    "equal": lambda: torch.equal(X, X),
    "boolean-mask indexing": lambda: X[MASK],
    "boolean-mask assignment": lambda: X.detach().clone().index_put_((MASK,), torch.zeros(())),
    "nonzero": lambda: MASK.nonzero(),
    "masked_select": lambda: X.masked_select(MASK[:, None]),
    "bincount": lambda: torch.bincount(MASK.long()),
    "unique": lambda: torch.unique(MASK),
    "repeat_interleave by a tensor": lambda: X.repeat_interleave(MASK.long() + 1, dim=0),
    "torch.tensor(data, device=)": lambda: torch.tensor([1.0, 2.0], device=X.device),
    "new_tensor(data)": lambda: X.new_tensor([0.299, 0.587, 0.114]),
    "host permutation moved": lambda: torch.randperm(6).to(X.device),
    "host index of a device tensor": lambda: X[torch.randperm(6)],
    "computed from host tensors, moved": lambda: torch.argsort(torch.randperm(6)).to(X.device),
}


@pytest.mark.parametrize("name", list(SYNCS))
def test_each_sync_raises(name):
    with pytest.raises(HostSyncError, match="host-device synchronisation in the training step"), HostSyncGuard():
        SYNCS[name]()


def test_a_step_without_syncs_passes():
    with HostSyncGuard():
        y = torch.where(MASK[:, None], X, 0.0)  # fixed shapes instead of X[MASK]
        ids = torch.argsort(MASK.to(torch.uint8), descending=True, stable=True)[:3]
        z = torch.gather(y, 0, ids[:, None].expand(-1, 3)) * torch.tensor(0.5)  # a 0-dim host scalar is fine
        counts = torch.zeros(2, dtype=torch.long, device=X.device).index_add_(0, MASK.long(), torch.ones_like(MASK, dtype=torch.long))
        perm = torch.randperm(6, device=X.device)  # made on the device
        (z.sum() + X[perm].sum() + counts.sum()).backward()
        torch.arange(4).float()  # host tensors that stay on the host
    assert X.grad is not None


def test_allow_list_lets_a_named_function_through_and_records_it():
    def shuffle_order():
        return torch.randperm(6).to(X.device)

    with HostSyncGuard(allow=["tests/test_sync_guard.py:shuffle_order"]) as guard:
        shuffle_order()
    assert len(guard.allowed) == 1 and "shuffle_order" in guard.allowed[0]
    with pytest.raises(HostSyncError), HostSyncGuard(allow=["tests/test_sync_guard.py:other"]):
        shuffle_order()
