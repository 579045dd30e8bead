"""Every method's training step, made once for the CPU tests and the GPU tests (``tests/gpu/``): the tiny
overrides each method trains with, and a run of the real ``train()`` whose training steps (forward, loss,
logging and backward) run inside a context manager of the caller's choice (a host-sync guard on CPU,
``torch.cuda.set_sync_debug_mode("error")`` on CUDA)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from hydra.utils import get_class, instantiate

from tests.conftest import text_overrides
from tests.methods.test_training import IMAGE_METHODS, SMALL_HEADS

TEXT_METHODS = ["clm", "mlm"]
ALL_METHODS = IMAGE_METHODS + TEXT_METHODS
# 8-px images for the ResNet methods (the ViT methods need their 16-px patch grid)
SMALL_IMAGES = {m: ["data.image_size=8"] for m in ("simclr", "byol", "simsiam", "barlow_twins", "vicreg")}

# Syncs the guards let through, each with the reason it is not a fix's to make (none today: every method's
# step runs under the guard with nothing allowed)
KNOWN_SYNCS: list[str] = []


# Methods whose step still syncs on CUDA (the GPU tests expect them to fail); none today
KNOWN_CUDA_SYNCS: dict[str, str] = {}

# what the step does only in some configurations: SwAV's queue (full from the second step on)
STEP_PATHS = {"swav": ["method.queue_length=8", "method.queue_start_epoch=0", "data.batch_size=8"]}


def method_overrides(method: str, corpus: str | None = None, callbacks: bool = False) -> list[str]:
    """The tiny configuration of ``method``: small heads and images, or the tiny text model on ``corpus``;
    without the default callbacks unless ``callbacks``."""
    if method in TEXT_METHODS:
        overrides = [o for o in text_overrides(corpus, method) if callbacks or not o.startswith("callbacks.")]
    else:
        overrides = [f"method={method}", *SMALL_HEADS.get(method, []), *SMALL_IMAGES.get(method, [])]
    return overrides + ([] if callbacks else ["callbacks=none"])


def method_class(cfg):
    return get_class(cfg.method._target_)


def train_with_guarded_steps(cfg, guard: Callable[[], contextlib.AbstractContextManager], monkeypatch,
                             hooks: tuple[str, ...] = ("training_step", "backward")) -> dict:
    """``train(cfg)`` with each of the method's ``hooks`` run inside a fresh ``guard()`` (and the datamodule's
    ``on_after_batch_transfer``, the batched device augmentation, when ``data.gpu_augment`` is set). Checks
    that the loss is finite and that the training steps moved the weights; returns the final metrics."""
    from ssl_lightning.train import train

    seen: dict = {}

    def guarded(fn):
        def run(self, *args, **kwargs):
            if fn.__name__ == "training_step" and "initial" not in seen:  # before the first step, unguarded
                seen["model"] = self
                seen["initial"] = {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}
            with guard():
                return fn(self, *args, **kwargs)
        return run

    cls = method_class(cfg)
    for hook in hooks:
        monkeypatch.setattr(cls, hook, guarded(getattr(cls, hook)))
    if cfg.data.get("gpu_augment"):
        dm_cls = type(instantiate(cfg.data, train_transform=instantiate(cfg.augment)))
        monkeypatch.setattr(dm_cls, "on_after_batch_transfer", guarded(dm_cls.on_after_batch_transfer))
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    params = dict(seen["model"].named_parameters())
    moved = [n for n, before in seen["initial"].items() if not torch.equal(params[n].detach(), before)]
    assert len(moved) > len(seen["initial"]) // 2, f"only {len(moved)} of {len(seen['initial'])} parameters moved"
    return metrics
