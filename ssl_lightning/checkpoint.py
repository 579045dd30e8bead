"""Checkpoint files: written atomically, read without executing code, refused when they are not ours."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_lightning.config import ConfigError

#: the key every ssl_lightning training checkpoint carries (see ``SSLMethod.on_save_checkpoint``)
CHECKPOINT_KEY = "ssl_lightning"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the complete new one, never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_symlink(target: str, link: str | Path) -> None:
    """Point ``link`` at ``target`` (a name relative to the link's directory) in one rename."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes local files with :func:`atomic_torch_save` (remote URLs keep
    Lightning's own transactional write)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` (no code is executed) and check it is ours.

    Raises ``ConfigError`` naming ``key`` for a missing file, a file that is not a checkpoint, a pickle that
    needs arbitrary objects (refused rather than executed) and a checkpoint not written by ssl_lightning.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} is not a file: give a checkpoint written by ssl_lightning")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(
            f"{key}={str(path)!r} was refused: it holds Python objects that loading would execute "
            f"(torch.load weights_only=True: {str(e).splitlines()[0]})"
        ) from e
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
        raise ConfigError(f"{key}={str(path)!r} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(
            f"{key}={str(path)!r} is not an ssl_lightning checkpoint (no '{CHECKPOINT_KEY}' entry): "
            "give a checkpoint written by `python -m ssl_lightning.train`"
        )
    return checkpoint
