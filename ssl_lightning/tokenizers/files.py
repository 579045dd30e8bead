"""Tokenizer files: the k-means codebooks this framework fits, and external tokenizers a user brings.

Two formats, told apart by the suffix:

- ``*.pt`` (anything but ``.pt2``): a ``torch.save`` dict of plain tensors and numbers, loadable with
  ``torch.load(weights_only=True)``::

      {"format": "ssl_lightning.tokenizer", "version": 1, "kind": "kmeans",
       "image_size": int, "patch_size": int, "vocab_size": int,
       "codebook": FloatTensor (vocab_size, 3 * patch_size**2),   # patch pixels in [0, 1], (row, col, RGB)
       "fit": {...}}                                               # optional statistics of the fit

  A codebook made elsewhere (e.g. a dVAE's or VQ-GAN's patch codebook mapped to pixels) can be written in
  this format by hand.
- ``*.pt2``: any tokenizer exported with ``torch.export`` (e.g. a wrapped DALL-E encoder). Its program
  takes images in [0, 1], (B, 3, image_size, image_size), and returns token ids (B, h, w) or (B, h*w), or
  logits (B, vocab_size, h, w), with h*w the ViT's number of patches; export it with a dynamic batch
  dimension and store its metadata as the extra file ``ssl_lightning_tokenizer.json``::

      batch = torch.export.Dim("batch")
      program = torch.export.export(wrapper, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}})
      torch.export.save(program, "tokenizer.pt2", extra_files={"ssl_lightning_tokenizer.json":
          json.dumps({"image_size": 32, "patch_size": 4, "vocab_size": 8192})})

Every mismatch with the run (image size, patch size, vocabulary) is a ConfigError before training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ssl_lightning.config import ConfigError
from ssl_lightning.tokenizers.kmeans import PatchKMeansTokenizer

FORMAT = "ssl_lightning.tokenizer"
EXPORT_METADATA = "ssl_lightning_tokenizer.json"
FIT_COMMAND = "python -m ssl_lightning.fit_tokenizer [the run's data/backbone overrides] output={path}"


def save_tokenizer(tokenizer: PatchKMeansTokenizer, path: str | Path, fit: dict | None = None) -> Path:
    """Write ``tokenizer`` in the ``.pt`` format; returns the path."""
    path = Path(path)
    if path.suffix == ".pt2":
        raise ValueError(f"{path}: .pt2 is the torch.export format; save k-means codebooks as .pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": FORMAT, "version": 1, "kind": tokenizer.kind, "image_size": tokenizer.image_size,
        "patch_size": tokenizer.patch_size, "vocab_size": tokenizer.vocab_size,
        "codebook": tokenizer.codebook.detach().float().cpu().clone(), "fit": dict(fit or {}),
    }, path)
    return path


class ExportedTokenizer(nn.Module):
    """A ``torch.export`` program as a tokenizer: data-normalised images -> (B, N) token ids.

    The program is kept outside the module tree (exported programs cannot be put in train mode, which
    Lightning does to every submodule), so it is not part of checkpoints: a resumed run reloads the file.
    """

    kind = "export"

    def __init__(self, program: nn.Module, image_size: int, patch_size: int, vocab_size: int):
        super().__init__()
        object.__setattr__(self, "_program", program)
        self._program_device = torch.device("cpu")
        self.image_size, self.patch_size, self.vocab_size = image_size, patch_size, vocab_size
        self.num_patches = (image_size // patch_size) ** 2
        self.register_buffer("fitted", torch.ones((), dtype=torch.bool), persistent=False)
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1), persistent=False)

    set_input_normalization = PatchKMeansTokenizer.set_input_normalization

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._program_device != images.device:
            object.__setattr__(self, "_program", self._program.to(images.device))
            self._program_device = images.device
        with torch.autocast(device_type=images.device.type, enabled=False):
            out = self._program(images.float() * self.input_std + self.input_mean)
        if out.is_floating_point():
            out = out.argmax(dim=1)  # logits (B, V, h, w)
        out = out.flatten(1).long()
        if out.shape[1] != self.num_patches:
            raise RuntimeError(f"the exported tokenizer gave {out.shape[1]} tokens per image, the ViT has {self.num_patches} patches")
        return out


def _missing(path: str, key: str) -> ConfigError:
    return ConfigError(
        f"{key}={path!r} does not exist: create it with `{FIT_COMMAND.format(path=path)}`, "
        f"or set {key}=null to fit a k-means tokenizer on the training images at the start of the run"
    )


def _check(meta: dict, path: str, key: str, image_size: int, patch_size: int, vocab_size: int | None) -> None:
    for name, expected, hint in (
        ("image_size", image_size, "data.image_size"),
        ("patch_size", patch_size, "backbone.patch_size"),
        ("vocab_size", vocab_size, "method.vocab_size"),
    ):
        if expected is not None and meta.get(name) != expected:
            raise ConfigError(
                f"{key}={path!r} was made for {name}={meta.get(name)!r} but this run has {hint}={expected}: "
                f"fit a matching tokenizer (`{FIT_COMMAND.format(path='FILE')}`) or change {hint}"
            )


def load_tokenizer(path: str | Path, image_size: int, patch_size: int, vocab_size: int | None,
                   key: str = "method.tokenizer_path") -> nn.Module:
    """Load a tokenizer file and check it against the run; ``vocab_size=None`` accepts the file's."""
    path = str(Path(path).expanduser())
    if not Path(path).is_file():
        raise _missing(path, key)
    if path.endswith(".pt2"):
        extra = {EXPORT_METADATA: ""}
        try:
            program = torch.export.load(path, extra_files=extra)
            meta = json.loads(extra[EXPORT_METADATA] or "null")
        except Exception as e:  # noqa: BLE001 - any failure means: not a usable exported program
            raise ConfigError(f"{key}={path!r} is not a torch.export tokenizer with {EXPORT_METADATA} ({e})") from e
        if not isinstance(meta, dict):
            raise ConfigError(f"{key}={path!r} has no {EXPORT_METADATA} with image_size, patch_size and vocab_size")
        _check(meta, path, key, image_size, patch_size, vocab_size)
        return ExportedTokenizer(program.module(), meta["image_size"], meta["patch_size"], meta["vocab_size"])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{key}={path!r} is not a tokenizer file ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{key}={path!r} is not a tokenizer file: expected a dict with format={FORMAT!r} "
                          "(see ssl_lightning/tokenizers/files.py), or a torch.export .pt2 file")
    if state.get("kind") != "kmeans":
        raise ConfigError(f"{key}={path!r} has kind={state.get('kind')!r}; this version reads 'kmeans'")
    _check(state, path, key, image_size, patch_size, vocab_size)
    tokenizer = PatchKMeansTokenizer(state["vocab_size"], state["patch_size"], state["image_size"])
    codebook = state["codebook"]
    if not isinstance(codebook, torch.Tensor) or tuple(codebook.shape) != tuple(tokenizer.codebook.shape):
        shape = tuple(codebook.shape) if isinstance(codebook, torch.Tensor) else type(codebook).__name__
        raise ConfigError(f"{key}={path!r} has a codebook of shape {shape}, expected {tuple(tokenizer.codebook.shape)}")
    tokenizer.set_codebook(codebook.float())
    return tokenizer
