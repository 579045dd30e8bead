"""Checkpoint files: written atomically, read without executing code, refused when they are not ours; and
reading a pretrained backbone back from a pretraining checkpoint or an exported backbone file.

Everything is read with ``torch.load(weights_only=True)`` (tensors and plain containers only, no pickled
objects): a Lightning checkpoint written by ``ssl_lightning.train`` needs no allow-listing, since
``SSLMethod.on_save_checkpoint`` stores the run config as plain containers. A backbone is rebuilt from its
Hydra config (``_target_`` and arguments), which must name an ``ssl_lightning`` callable, so reading a file
never runs code from elsewhere.

- A pretraining checkpoint (``checkpoints/*.ckpt``) holds ``checkpoint["ssl_lightning"] = {"config": the
  resolved run config, "method": class name}`` and the method's ``state_dict``, backbone under ``backbone.``.
- An exported backbone (``python -m ssl_lightning.export``) is a plain ``state_dict`` FILE with a sidecar
  ``FILE.json`` (:func:`sidecar_path`) holding the backbone config, the method and the source checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from ssl_lightning.config import ConfigError

#: the key every ssl_lightning training checkpoint carries (see ``SSLMethod.on_save_checkpoint``)
CHECKPOINT_KEY = "ssl_lightning"
SIDECAR_FORMAT = "ssl_lightning.backbone"
SIDECAR_VERSION = 1
HOW_TO = ("give a checkpoint written by `python -m ssl_lightning.train` (outputs/.../checkpoints/*.ckpt) or a "
          "backbone written by `python -m ssl_lightning.export`")


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
    checkpoint = read(path, key, how_to="give a checkpoint written by `python -m ssl_lightning.train`")
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(
            f"{key}={str(Path(path).expanduser())!r} is not an ssl_lightning checkpoint (no '{CHECKPOINT_KEY}' entry): "
            "give a checkpoint written by `python -m ssl_lightning.train`"
        )
    return checkpoint


@dataclass
class PretrainedBackbone:
    """A backbone with its weights loaded, and what is known about where it came from."""

    module: nn.Module
    config: dict[str, Any]  # the backbone's Hydra config: _target_ and arguments
    method: str | None  # class name of the method that pretrained it
    modality: str  # "image", or what else it was pretrained on (e.g. "text")
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint, global_step, epoch, prefix
    preprocessing: dict[str, Any] | None = None  # image_size, mean, std of the pretraining data

    @property
    def description(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config.items() if k != "_target_")
        return f"{self.config.get('_target_')}({args})"


def sidecar_path(file: str | Path) -> Path:
    """``FILE.json`` next to an exported backbone ``FILE`` (the suffix is appended: ``r18.pt -> r18.pt.json``)."""
    return Path(f"{file}.json")


def read(path: str | Path, key: str = "ckpt", how_to: str = HOW_TO) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that say what the file is not and
    how to get a good one (``how_to``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} is not a file: {how_to}")
    if path.suffix == ".safetensors":  # `export format=safetensors`: tensors only by construction
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as e:
            raise ConfigError(f"{key}={str(path)!r} is not a safetensors file ({e}); {how_to}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Please use|\n\n|$)", str(e), re.S)
        reason = " ".join((found.group(1) if found else str(e)).split())[:300]
        raise ConfigError(
            f"{key}={str(path)!r} is not an ssl_lightning checkpoint: torch.load(weights_only=True) refuses it "
            f"({reason}); it holds pickled Python objects, which our files never do; {how_to}"
        ) from e
    except Exception as e:  # not a torch file at all: zip/pickle errors of many kinds
        raise ConfigError(f"{key}={str(path)!r} is not a PyTorch checkpoint ({type(e).__name__}: {e}); {how_to}") from e


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def data_modality(data_target: str | None) -> str:
    """``"image"`` when the pretraining data was an image datamodule; else the data class's name, lower-case
    without ``DataModule`` (``TextDataModule -> "text"``), or ``"unknown"``."""
    from ssl_lightning.data import ImageDataModule

    if not data_target:
        return "unknown"
    try:
        cls = get_class(data_target)
    except Exception:
        return "unknown"
    if isinstance(cls, type) and issubclass(cls, ImageDataModule):
        return "image"
    return cls.__name__.lower().replace("datamodule", "") or "unknown"


def timm_backbone_of(state: dict[str, torch.Tensor], timm_meta: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """A ``format=timm`` export as the state and config of ``backbone=timm`` (weights under ``model.``)."""
    args = dict(timm_meta.get("model_args") or {})
    config = {"_target_": "ssl_lightning.backbones.timm_backbone", "name": timm_meta["model"],
              "img_size": args.pop("img_size", None), "patch_size": args.pop("patch_size", None), "model_args": args}
    return {f"model.{k}": v for k, v in state.items()}, config


def build_backbone(config: dict[str, Any], key: str) -> nn.Module:
    target = config.get("_target_") if isinstance(config, dict) else None
    if target == "ssl_lightning.backbones.timm_backbone":  # the weights come from the file: never download
        config = {**config, "pretrained": False, "checkpoint": None}
    if not isinstance(target, str) or not target.startswith("ssl_lightning."):
        raise ConfigError(f"{key}: the backbone config names _target_={target!r}; only ssl_lightning backbones are "
                          "built from a checkpoint's config (a file never chooses which code runs)")
    try:
        return instantiate(config)
    except Exception as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{key}: cannot build the backbone {target} from {config} ({cause})") from e


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], key: str, description: str) -> None:
    """``module.load_state_dict(state)`` (strict), with a mismatch explained in one line."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (first: {shapes[0]})")
        if missing:
            parts.append(f"{len(missing)} missing weights (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights (first: {unexpected[:3]})")
        raise ConfigError(f"{key}: architecture mismatch: the weights do not fit {description}: {'; '.join(parts)}")
    module.load_state_dict(state)


def load_pretrained(path: str | Path, prefix: str = "backbone", backbone: dict[str, Any] | None = None,
                    key: str = "ckpt", image_only: str | None = None) -> PretrainedBackbone:
    """Rebuild and load the backbone of a pretraining checkpoint or an exported backbone file.

    Args:
        path: a ``.ckpt`` of ``ssl_lightning.train`` or a FILE of ``ssl_lightning.export`` (with ``FILE.json``).
        prefix: which module of a pretraining checkpoint: ``backbone`` (the online encoder) or e.g.
            ``teacher_backbone`` (BYOL's EMA teacher).
        backbone: a backbone config that replaces the file's (needed for a plain state_dict without sidecar);
            the weights must fit it.
        image_only: if given, a backbone known to be pretrained on other data than images (text) fails before
            it is built, with this reason (e.g. ``"protocol=knn evaluates image backbones"``).
    """
    path = Path(path).expanduser()
    obj = read(path, key)
    name = f"{key}={str(path)!r}"
    if isinstance(obj, dict) and "state_dict" in obj and CHECKPOINT_KEY in obj:
        meta = obj[CHECKPOINT_KEY] or {}
        run = meta.get("config") or {}
        if not isinstance(run, dict) or "backbone" not in run:
            raise ConfigError(f"{name} has no run config (was the method trained outside `ssl_lightning.train`?): {HOW_TO}")
        prefix_dot = f"{prefix}."
        state = {k[len(prefix_dot):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix_dot)}
        if not state:
            modules = sorted({k.split(".")[0] for k in obj["state_dict"]})
            raise ConfigError(f"prefix={prefix!r} is not allowed: {name} has no '{prefix_dot}*' weights; its modules are {modules}")
        data = run.get("data") or {}
        info = dict(config=dict(run["backbone"]), method=meta.get("method"),
                    modality=data_modality(data.get("_target_")),
                    source={"checkpoint": str(path.resolve()), "global_step": obj.get("global_step"),
                            "epoch": obj.get("epoch"), "prefix": prefix},
                    preprocessing={k: data[k] for k in ("image_size", "mean", "std") if k in data} or None)
    elif isinstance(obj, dict) and "state_dict" in obj:
        raise ConfigError(f"{name} is a checkpoint not written by ssl_lightning (it has no 'ssl_lightning' entry with "
                          f"the run config and method, so its backbone cannot be rebuilt): {HOW_TO}")
    elif is_state_dict(obj):
        state = obj
        sidecar = sidecar_path(path)
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as e:
                raise ConfigError(f"{name}: its sidecar {sidecar} is not JSON ({e})") from e
            if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
                raise ConfigError(f"{name}: its sidecar {sidecar} was not written by `python -m ssl_lightning.export`")
            info = dict(config=meta["backbone"], method=meta.get("method"), modality=meta.get("modality", "unknown"),
                        source=meta.get("source") or {}, preprocessing=meta.get("preprocessing"))
            if meta.get("file_format") == "timm":  # timm's names: rebuild it as backbone=timm
                state, info["config"] = timm_backbone_of(state, meta["timm"])
        elif backbone is not None:
            info = dict(config={}, method=None, modality="unknown", source={"checkpoint": str(path.resolve())},
                        preprocessing=None)
        else:
            raise ConfigError(f"{name} is a plain state_dict without its sidecar {sidecar.name}: give its architecture "
                              "with backbone=NAME (e.g. backbone=resnet18), or export it with `python -m ssl_lightning.export`")
    else:
        raise ConfigError(f"{name} is neither an ssl_lightning checkpoint nor an exported backbone: {HOW_TO}")

    if image_only and info["modality"] not in ("image", "unknown"):
        raise ConfigError(f"{name} holds a {info['modality']} backbone (method {info['method']}, "
                          f"{info['config'].get('_target_')}); {image_only}")
    if backbone is not None:
        info["config"] = dict(backbone)
    module = build_backbone(info["config"], name)
    pretrained = PretrainedBackbone(module=module, **info)
    load_weights(module, state, name, pretrained.description)
    return pretrained


def save_state_dict(state: dict[str, torch.Tensor], out: Path, safetensors: bool) -> None:
    """``torch.save`` (atomically) or, with ``safetensors``, ``safetensors.torch.save_file`` (a temporary file
    renamed over ``out``)."""
    if not safetensors:
        atomic_torch_save(state, out)
        return
    from safetensors.torch import save_file

    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out)


def export(pretrained: PretrainedBackbone, out: str | Path, format: str = "torch") -> tuple[Path, Path]:
    """Write the backbone's ``state_dict`` to ``out`` and its description to ``out.json``; returns both paths.

    ``format``: ``torch`` (``torch.save``), ``safetensors``, or ``timm`` (timm's key names for the timm model the
    sidecar names, see :mod:`ssl_lightning.backbones.to_timm`; a safetensors file when ``out`` ends with
    ``.safetensors``, else ``torch.save``).
    """
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    timm_export = None
    if format == "timm":
        from ssl_lightning.backbones.to_timm import to_timm

        timm_export = to_timm(pretrained.module, pretrained.config)
        state = timm_export.state_dict
    else:
        state = {k: v.detach().cpu().clone() for k, v in pretrained.module.state_dict().items()}
    save_state_dict(state, out, safetensors=format == "safetensors" or (format == "timm" and out.suffix == ".safetensors"))
    meta = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "backbone": pretrained.config,
        "num_features": int(pretrained.module.num_features),
        "method": pretrained.method,
        "modality": pretrained.modality,
        "preprocessing": pretrained.preprocessing,
        "source": pretrained.source,
        "torch": torch.__version__,
        "file_format": format,
    }
    if timm_export is not None:  # the file is timm's, not ours: `ssl_lightning.eval` rebuilds it with backbone=timm
        import timm

        meta["timm"] = {"model": timm_export.name, "model_args": timm_export.model_args, "timm": timm.__version__,
                        "create_model": timm_export.create_call(str(out))}
    sidecar = sidecar_path(out)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return out, sidecar
