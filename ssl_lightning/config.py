"""Where the Hydra configs live, and the error type for bad configuration values."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A configuration value that cannot work; raised before training starts.

    The message names the key, the bad value and what is allowed.
    """


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError("key=value: allowed")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def config_dir() -> str:
    """Absolute path of the Hydra config tree.

    A wheel install ships ``conf/`` inside the package (``ssl_lightning/conf``); a source checkout or an
    editable install has it next to the package, at the top of the repository.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"ssl_lightning's Hydra configs were not found in {package}/conf or {package.parent}/conf")


def find_config_error(exc: BaseException | None) -> ConfigError | None:
    """The ConfigError behind ``exc`` (Hydra wraps a constructor's error in InstantiationException), or None."""
    while exc is not None:
        if isinstance(exc, ConfigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def exit_on_config_error(on_exit: Callable[[], object] | None = None) -> Iterator[None]:
    """For entry points: a configuration error becomes one line, ``Configuration error: ...``, and a non-zero
    exit, with no traceback; every other exception passes through. ``on_exit`` runs first (e.g. removing a run
    directory the failed run left empty)."""
    try:
        yield
    except (ConfigError, InstantiationException) as e:
        error = find_config_error(e)
        if error is None:
            raise
        if on_exit is not None:
            on_exit()
        raise SystemExit(f"Configuration error: {error}") from None


def _timm_patch_size(name: str) -> int | None:
    from ssl_lightning.backbones.timm_backbone import default_patch_size

    return default_patch_size(name)


# backbone=timm: the model's own patch size, known before the backbone is built (conf/backbone/timm.yaml)
OmegaConf.register_new_resolver("timm_patch_size", _timm_patch_size, replace=True, use_cache=True)
