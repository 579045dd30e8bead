"""What a recipe should reach: the ``reference:`` block of each ``conf/experiment`` preset, next to ours.

A reference block names the metric it compares with, the published value (top-1 %, ``null`` where nobody
published one), the protocol behind it and its source::

    reference:
      metric: val/knn_top1          # ours: a key of metrics.json (online) or of eval's results.json (offline)
      value: 86.9
      protocol: {eval: knn, k: 200, eval_epochs: null, epochs: 200, batch_size: 128, backbone: resnet18}
      source: "lightly benchmarks (docs/source/getting_started/benchmarks.rst), CIFAR-10 table"
      label: "lightly, bs128, 200 ep"

:func:`compare` gives the line printed at the end of a training run and the ``reference`` column of
``summarize`` (``val/knn_top1 84.1 vs 86.9 (lightly, bs128, 200 ep), gap -2.8``); :func:`reference_protocol`
is ``python -m ssl_lightning.eval protocol=reference``: the reference's own evaluation protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_lightning.config import ConfigError

log = logging.getLogger(__name__)

REFERENCE_KEYS = ("metric", "value", "protocol", "source", "label")
PROTOCOL_KEYS = ("eval", "k", "eval_epochs", "epochs", "batch_size", "backbone")
EVALS = ("knn", "linear", "finetune")


def missing_keys(reference: Mapping[str, Any]) -> list[str]:
    """The keys a complete reference block lacks (``protocol.k`` etc. for the protocol's keys); [] if complete."""
    missing = [k for k in REFERENCE_KEYS if k not in reference]
    protocol = reference.get("protocol") or {}
    missing += [f"protocol.{k}" for k in PROTOCOL_KEYS if k not in protocol]
    if protocol.get("eval") not in EVALS:
        missing.append(f"protocol.eval (one of {', '.join(EVALS)})")
    elif protocol["eval"] == "knn" and not protocol.get("k"):
        missing.append("protocol.k (kNN needs its k)")
    if not str(reference.get("source") or "").strip():
        missing.append("source")
    return missing


def compare(reference: Mapping[str, Any] | None, metrics: Mapping[str, float]) -> str | None:
    """``metric ours vs reference (label), gap +x.x``; ``None`` without a reference block.

    Where the run did not measure the metric (an offline protocol), says so and how to measure it; where
    nobody published a value, says that."""
    if not reference:
        return None
    metric, value, label = reference["metric"], reference.get("value"), reference.get("label") or reference.get("source")
    ours = metrics.get(metric)
    ours_text = "not measured" if ours is None else f"{ours:.1f}"
    if value is None:
        return f"{metric} {ours_text} (no published reference: {reference.get('source')})"
    line = f"{metric} {ours_text} vs {float(value):.1f} ({label})"
    if ours is None:
        return line + ": python -m ssl_lightning.eval ckpt=RUN_DIR/checkpoints/last.ckpt protocol=reference measures it"
    return line + f", gap {ours - float(value):+.1f}"


def log_reference(reference: Mapping[str, Any] | None, metrics: Mapping[str, float]) -> None:
    """At the end of a training run: ours next to the preset's reference (nothing without one)."""
    line = compare(reference, metrics)
    if line is not None:
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"reference: {line}")


def run_reference(run: Path) -> dict[str, Any] | None:
    """The reference block of a training run directory's saved config (``config.yaml``, else
    ``.hydra/config.yaml``); ``None`` when it has none."""
    for file in (run / "config.yaml", run / ".hydra" / "config.yaml"):
        if file.is_file():
            config = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
            if isinstance(config, dict):
                return config.get("reference")
    return None


def summary_column(run: Path, metrics: Mapping[str, float]) -> str | None:
    """``summarize``'s ``reference`` column for one run."""
    return compare(run_reference(run), metrics)


def checkpoint_reference(ckpt: str) -> dict[str, Any]:
    """The reference block stored with a pretraining checkpoint's run config."""
    from ssl_lightning.checkpoint import CHECKPOINT_KEY, load_checkpoint

    config = (load_checkpoint(ckpt, "ckpt").get(CHECKPOINT_KEY) or {}).get("config") or {}
    reference = config.get("reference")
    if not reference:
        raise ConfigError(f"protocol=reference is not allowed with ckpt={ckpt!r}: its run has no reference block; "
                          "pretrain with a preset that has one (experiment=<method>_cifar10, _imagenet100, _imagenet) "
                          "or choose protocol=knn|linear|finetune")
    return reference


def reference_protocol(ckpt: str):
    """``protocol=reference``: the evaluation protocol of the checkpoint's reference (kNN with its k; a linear
    probe or fine-tuning for its ``eval_epochs``, 100 when not given), every other setting the protocol's
    default (``conf/protocol/<eval>.yaml``)."""
    from ssl_lightning.protocols import KNN, FineTune, LinearProbe

    protocol = checkpoint_reference(ckpt)["protocol"]
    kind, epochs = protocol["eval"], protocol.get("eval_epochs") or 100
    if kind == "knn":
        return KNN(k=int(protocol["k"]), temperature=0.1)
    if kind == "linear":
        return LinearProbe(epochs=int(epochs))
    if kind == "finetune":
        return FineTune(epochs=int(epochs))
    raise ConfigError(f"reference.protocol.eval={kind!r} in ckpt={ckpt!r} is not allowed: one of {', '.join(EVALS)}")
