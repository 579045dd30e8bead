"""Optional extras: a feature whose package is missing fails before training with the pip command that adds it."""

from __future__ import annotations

import importlib.util

from ssl_lightning.config import ConfigError

# the package each extra of pyproject.toml provides, and what needs it
EXTRAS = {
    "wandb": ("wandb", "logger=wandb"),
    "mlflow": ("mlflow", "logger=mlflow"),
    "cluster": ("hydra_plugins.hydra_submitit_launcher", "hydra/launcher=submitit_slurm"),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra/sweeper=optuna"),
}


def pip_command(extra: str) -> str:
    return f"pip install 'ssl_lightning[{'cluster' if extra == 'optuna' else extra}]'"


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def require(extra: str) -> None:
    """Raise ``ConfigError`` naming the feature and the pip command unless ``extra``'s package imports."""
    module, feature = EXTRAS[extra]
    if not is_installed(module):
        raise ConfigError(f"{feature} needs the {module.split('.')[-1]} package, which is not installed: "
                          f"{pip_command(extra)}")
