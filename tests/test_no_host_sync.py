"""No host-device synchronisation in any method's training step, checked by :class:`HostSyncGuard` (the CPU
proxy of ``torch.cuda.set_sync_debug_mode("error")``, run for real by ``tests/gpu/test_steps.py``)."""

from __future__ import annotations

import pytest

from ssl_lightning.sync_guard import HostSyncGuard
from tests.method_steps import ALL_METHODS, KNOWN_SYNCS, STEP_PATHS, method_overrides, train_with_guarded_steps


@pytest.mark.parametrize("method", ALL_METHODS)
def test_training_step_and_backward_never_sync(make_cfg, tiny_corpus, method, monkeypatch):
    """Two steps (forward, loss, logging, backward) of every method under the guard."""
    cfg = make_cfg(*method_overrides(method, tiny_corpus), *STEP_PATHS.get(method, []), "trainer.fast_dev_run=2")
    train_with_guarded_steps(cfg, lambda: HostSyncGuard(allow=KNOWN_SYNCS), monkeypatch)
