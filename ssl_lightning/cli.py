"""The command line before Hydra sees it: ``--help`` for people, and overrides checked with suggestions.

Hydra answers an unknown option (``method=simclrr``) with its config search path and a mistyped key
(``method.temprature=0.1``) with a struct error, one problem at a time. :func:`check_overrides` composes the
config once, reports every unknown option and key together, each with its closest matches, and exits before a
run directory exists.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_lightning.config import ConfigError, config_dir

# Hydra flags followed by a value in the next argument
_FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--experimental-rerun", "--info", "-i")
# Flags that choose another config: nothing of ours to check against
_OTHER_CONFIG = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")

EXAMPLES = """\
  python -m ssl_lightning.train experiment=moco_digits              MoCo v2 on the bundled digits (CPU, minutes)
  python -m ssl_lightning.train method=byol trainer.devices=8 trainer=gpu data=imagefolder \\
      data.train_dir=/data/imagenet/train data.val_dir=/data/imagenet/val
  python -m ssl_lightning.train -m method=simclr method.temperature=0.1,0.2,0.5    a sweep, one job per value
  python -m ssl_lightning.train method=mae trainer.max_steps=200     a short run (evaluated at its last step)
  python -m ssl_lightning.train resume=auto hydra.run.dir=outputs/DATE/TIME   continue a run where it stopped"""

KEYS = """\
  trainer.max_epochs, trainer.max_steps        how long (max_steps wins when both are set)
  trainer.check_val_every_n_epoch              how often kNN / linear probe / validation run (and at the last step)
  trainer.devices, trainer.num_nodes           DDP over devices and nodes; trainer=gpu for bf16 on GPUs
  data.batch_size, data.num_workers            per device
  method.*                                     the method's hyperparameters (python -m ssl_lightning.train
                                               method=NAME --cfg job shows them)
  seed, resume=auto, ckpt_path=FILE            reproducibility and resuming
  ~callbacks.NAME                              switch a callback off (knn, linear_probe, view_grid, ...)"""


def group_options(group: str, root: Path | None = None) -> list[str]:
    """The options of a config group: the names of ``conf/<group>/*.yaml``."""
    folder = Path(root or config_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def train_groups(config_name: str = "train") -> list[tuple[str, str | None]]:
    """(group, default option) for every group in the defaults list of ``conf/<config_name>.yaml``."""
    defaults = OmegaConf.load(Path(config_dir()) / f"{config_name}.yaml").get("defaults", [])
    groups = []
    for entry in defaults:
        if isinstance(entry, (dict, DictConfig)):
            for key, value in entry.items():
                key = str(key).split("@")[0].removeprefix("override ")
                if not key.startswith("hydra/") and (Path(config_dir()) / key).is_dir():
                    groups.append((key, None if value is None else str(value)))
    return groups


def help_text(config_name: str = "train") -> str:
    """``python -m ssl_lightning.train --help``: what it does, examples, the groups train uses, the common keys."""
    rows = []
    for group, default in train_groups(config_name):
        options = ", ".join(group_options(group))
        rows.append(f"  {group:<11}[{default or 'none'}]  {options}")
    return (
        "python -m ssl_lightning.train: self-supervised pretraining with PyTorch Lightning and Hydra.\n\n"
        "Usage: python -m ssl_lightning.train [GROUP=OPTION ...] [KEY=VALUE ...]\n"
        "       python -m ssl_lightning.train -m KEY=V1,V2,...         a sweep: one job per value\n\n"
        f"Examples:\n{EXAMPLES}\n\n"
        "Configuration groups (GROUP=OPTION, default in brackets):\n" + "\n".join(rows) + "\n\n"
        f"Common keys:\n{KEYS}\n\n"
        "The whole composed config: python -m ssl_lightning.train [overrides...] --cfg job\n"
        "Hydra's own flags: python -m ssl_lightning.train --hydra-help\n"
        "Each run prints its directory, final metrics and the next commands (evaluate, export, TensorBoard, resume)."
    )


def split_overrides(args: list[str]) -> list[str] | None:
    """The override arguments of a Hydra command line (flags and their values dropped); None when the line
    chooses another config (``--config-name`` ...), which this module does not check."""
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.split("=", 1)[0] in _OTHER_CONFIG:
            return None
        if arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        overrides.append(arg)
    return overrides


def _values(override) -> list[str]:
    """The option(s) or value(s) an override sets: each choice of a sweep, each item of a list of group options."""
    if not override.is_sweep_override():
        value = override.value()
        return [str(v) for v in value] if isinstance(value, list) else [override.get_value_element_as_str()]
    try:
        return list(override.sweep_string_iterator())
    except Exception:  # interval sweeps (Optuna): nothing to enumerate
        return []


def _lookup(cfg: DictConfig, key: str) -> tuple[bool, str, list[str]]:
    """(found, the deepest existing parent's dotted path, that parent's keys) for a dotted ``key``."""
    node, path = cfg, []
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node:
            node, path = node._get_node(part), [*path, part]  # the node itself: no interpolation is resolved
            continue
        if isinstance(node, ListConfig) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node, path = node._get_node(int(part)), [*path, part]
            continue
        keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        return False, ".".join(path), keys
    return True, ".".join(path), []


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        value = cfg._get_node(key)
        keys.append(full)
        if isinstance(value, DictConfig):
            keys += _leaf_keys(value, full + ".")
    return keys


def _unknown_key(key: str, value: str | None, cfg: DictConfig) -> str | None:
    """The problem with overriding ``key`` (deleting it when ``value`` is None), or None when the key exists."""
    found, parent, siblings = _lookup(cfg, key)
    if found:
        return None
    missing = key[len(parent) + 1:] if parent else key
    first = missing.split(".")[0]
    close = [f"{parent}.{k}" if parent else k for k in difflib.get_close_matches(first, siblings, n=3, cutoff=0.6)]
    if not close:  # e.g. a key under the wrong group: look everywhere
        close = difflib.get_close_matches(key, _leaf_keys(cfg), n=3, cutoff=0.75)
    where = f"'{parent}' has no key '{first}'" if parent else f"there is no top-level key '{first}'"
    if close:
        hint = f": did you mean {' or '.join(close)}?"
    else:
        hint = "" if value is None else f" (add a new key with +{key}={value})"
    return f"{'~' + key if value is None else f'{key}={value}'}: {where}{hint}"


def override_problems(overrides: list[str], config_name: str = "train") -> list[str]:
    """Every unknown group option and every unknown key among ``overrides``, each with its closest matches."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return []  # Hydra's own message names the syntax error
    root = Path(config_dir())
    problems, groups, keys = [], [], []
    for override, text in zip(parsed, overrides):
        name = override.key_or_group
        if name.split("/")[0].split(".")[0] == "hydra" or override.package is not None:
            continue
        if (root / name).is_dir():
            options = group_options(name, root)
            bad = [v for v in _values(override) if v not in options and v != "null"]
            for value in bad:
                close = difflib.get_close_matches(value, options, n=3, cutoff=0.5)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                problems.append(f"{name}={value}: no such option; {hint}options: {', '.join(options)}")
            if not bad:  # a sweep composes with its first choice; a list of options as it is
                values = _values(override)
                first = values[0] if override.is_sweep_override() and values else None
                groups.append(f"{text.split('=', 1)[0]}={first}" if first is not None else text)
        elif override.type.name in ("CHANGE", "DEL"):
            keys.append((name, override))
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            cfg = compose(config_name, overrides=groups)
    except Exception:  # a composition problem of another kind (a bad value, a bad deletion): Hydra reports it
        return problems
    for name, override in keys:
        values = _values(override) or ["..."]
        problem = _unknown_key(name, values[0], cfg) if override.type.name == "CHANGE" else _unknown_key(name, None, cfg)
        if problem:
            problems.append(problem)
    return problems


def check_command_line(args: list[str], config_name: str = "train") -> None:
    """Raise :class:`ConfigError` naming every unknown option and key of the command line at once."""
    overrides = split_overrides(args)
    if not overrides:
        return
    problems = override_problems(overrides, config_name)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
