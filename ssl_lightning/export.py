"""Export the backbone of a pretraining checkpoint as a plain ``state_dict``.

    python -m ssl_lightning.export ckpt=outputs/DATE/TIME/checkpoints/last.ckpt   # -> outputs/DATE/TIME/export/backbone.pt
    python -m ssl_lightning.export ckpt=... out=simclr_r18.pt
    python -m ssl_lightning.export ckpt=... prefix=teacher_backbone                 # -> .../export/teacher_backbone.pt
    python -m ssl_lightning.export ckpt=... format=safetensors                      # -> .../export/backbone.safetensors
    python -m ssl_lightning.export ckpt=... out=mae_vit.safetensors format=timm

``format``: ``torch`` (``torch.save``, the default), ``safetensors`` (the same tensors in the safetensors
format), or ``timm``: the weights in timm's names for the timm model the sidecar names (``backbone=timm``
models; our ViT as ``timm.models.VisionTransformer``; torchvision ResNets without the CIFAR stem as timm's
``resnet*``), which ``timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=OUT),
num_classes=0, **ARGS)`` loads; the exact call is printed and stored in the sidecar (``timm.create_model``).

writes ``out`` (by default ``export/<prefix>.pt`` in the checkpoint's run directory, so nothing lands in the
working directory unasked) (tensors only: ``torch.load(out, weights_only=True)`` loads it into the same torchvision ResNet
with ``fc = nn.Identity()``, or into ``ssl_lightning.backbones.vit(...)``) and the sidecar ``out.json``
(suffix appended) with the backbone's config (``_target_`` and arguments), its ``num_features``, the method
that pretrained it, the pretraining data's image size and normalisation, and the source checkpoint and step.
``python -m ssl_lightning.eval ckpt=out`` evaluates an exported backbone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_lightning.checkpoint import export, load_pretrained
from ssl_lightning.config import ConfigError, exit_on_config_error

USAGE = "usage: python -m ssl_lightning.export ckpt=PATH [out=FILE] [prefix=backbone] [format=torch|safetensors|timm]"
FORMATS = ("torch", "safetensors", "timm")


@dataclass
class ExportArgs:
    ckpt: str = MISSING  # a pretraining checkpoint (.ckpt)
    out: str | None = None  # the state_dict file to write (its sidecar is out + ".json"); None: default_out(ckpt, prefix)
    prefix: str = "backbone"  # which weights: backbone (online encoder) or e.g. teacher_backbone (BYOL's EMA teacher)
    format: str = "torch"  # torch | safetensors | timm


def parse(argv: list[str]) -> ExportArgs:
    """``key=value`` arguments into :class:`ExportArgs`, with one-line errors."""
    try:
        args = OmegaConf.merge(OmegaConf.structured(ExportArgs), OmegaConf.from_cli(argv))
        missing = OmegaConf.is_missing(args, "ckpt")
    except OmegaConfBaseException as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; {USAGE}") from e
    if missing:
        raise ConfigError(f"ckpt is required; {USAGE}")
    if args.format not in FORMATS:
        raise ConfigError(f"format={args.format!r} is not allowed: one of {', '.join(FORMATS)}")
    args = OmegaConf.to_object(args)
    if args.out is None:
        args.out = str(default_out(args.ckpt, args.prefix, args.format))
    if args.format == "safetensors" and not str(args.out).endswith(".safetensors"):
        raise ConfigError(f"out={args.out!r} is not allowed with format=safetensors: a file name ending in .safetensors "
                          "(how it is recognised when read back)")
    return args


def default_out(ckpt: str, prefix: str, format: str = "torch") -> Path:
    """``<run dir>/export/<prefix>.pt`` (``.safetensors`` for the safetensors and timm formats): the run dir is the
    folder above ``checkpoints/`` for a training checkpoint (``outputs/DATE/TIME/checkpoints/last.ckpt``), else the
    checkpoint's own folder."""
    folder = Path(ckpt).expanduser().parent
    run_dir = folder.parent if folder.name == "checkpoints" else folder
    return run_dir / "export" / f"{prefix}{'.pt' if format == 'torch' else '.safetensors'}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    with exit_on_config_error():
        args = parse(argv)
        pretrained = load_pretrained(args.ckpt, prefix=args.prefix)
        state_file, sidecar = export(pretrained, args.out, args.format)
    params = sum(p.numel() for p in pretrained.module.parameters())
    step = pretrained.source.get("global_step")
    print(f"wrote {state_file} ({pretrained.description}, {params / 1e6:.2f}M parameters, "
          f"{pretrained.module.num_features} features; {pretrained.method} at step {step}) and {sidecar}")
    if args.format == "timm":
        import json

        print("load it with: " + json.loads(sidecar.read_text())["timm"]["create_model"])


if __name__ == "__main__":
    main()
