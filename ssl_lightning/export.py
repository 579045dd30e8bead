"""Export the backbone of a pretraining checkpoint as a plain ``state_dict``.

    python -m ssl_lightning.export ckpt=outputs/DATE/TIME/checkpoints/last.ckpt   # -> outputs/DATE/TIME/export/backbone.pt
    python -m ssl_lightning.export ckpt=... out=simclr_r18.pt
    python -m ssl_lightning.export ckpt=... prefix=teacher_backbone                 # -> .../export/teacher_backbone.pt

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

USAGE = "usage: python -m ssl_lightning.export ckpt=PATH [out=FILE] [prefix=backbone]"


@dataclass
class ExportArgs:
    ckpt: str = MISSING  # a pretraining checkpoint (.ckpt)
    out: str | None = None  # the state_dict file to write (its sidecar is out + ".json"); None: default_out(ckpt, prefix)
    prefix: str = "backbone"  # which weights: backbone (online encoder) or e.g. teacher_backbone (BYOL's EMA teacher)


def parse(argv: list[str]) -> ExportArgs:
    """``key=value`` arguments into :class:`ExportArgs`, with one-line errors."""
    try:
        args = OmegaConf.merge(OmegaConf.structured(ExportArgs), OmegaConf.from_cli(argv))
        missing = OmegaConf.is_missing(args, "ckpt")
    except OmegaConfBaseException as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; {USAGE}") from e
    if missing:
        raise ConfigError(f"ckpt is required; {USAGE}")
    args = OmegaConf.to_object(args)
    if args.out is None:
        args.out = str(default_out(args.ckpt, args.prefix))
    return args


def default_out(ckpt: str, prefix: str) -> Path:
    """``<run dir>/export/<prefix>.pt``: the run dir is the folder above ``checkpoints/`` for a training
    checkpoint (``outputs/DATE/TIME/checkpoints/last.ckpt``), else the checkpoint's own folder."""
    folder = Path(ckpt).expanduser().parent
    run_dir = folder.parent if folder.name == "checkpoints" else folder
    return run_dir / "export" / f"{prefix}.pt"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    with exit_on_config_error():
        args = parse(argv)
        pretrained = load_pretrained(args.ckpt, prefix=args.prefix)
        state_file, sidecar = export(pretrained, args.out)
    params = sum(p.numel() for p in pretrained.module.parameters())
    step = pretrained.source.get("global_step")
    print(f"wrote {state_file} ({pretrained.description}, {params / 1e6:.2f}M parameters, "
          f"{pretrained.module.num_features} features; {pretrained.method} at step {step}) and {sidecar}")


if __name__ == "__main__":
    main()
