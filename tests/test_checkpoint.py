"""A crash while a checkpoint is written never destroys the previous one."""

from __future__ import annotations

import pytest
import torch

import ssl_lightning.checkpoint as checkpoint_module
from ssl_lightning.checkpoint import AtomicCheckpointIO, atomic_symlink, atomic_torch_save


def test_crash_during_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)

    def crashing_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_symlink_is_replaced_in_one_step(tmp_path):
    (tmp_path / "a.ckpt").write_text("a")
    (tmp_path / "b.ckpt").write_text("b")
    atomic_symlink("a.ckpt", tmp_path / "last.ckpt")
    atomic_symlink("b.ckpt", tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_text() == "b"


def test_trainer_writes_through_the_atomic_io(make_cfg):
    from hydra.utils import instantiate

    trainer = instantiate(make_cfg().trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
