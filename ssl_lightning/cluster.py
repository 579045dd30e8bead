"""Sweeps on a cluster and hyperparameter search, through Hydra's plugins (the ``[cluster]`` extra).

- ``hydra/launcher=submitit_slurm`` (hydra-submitit-launcher) submits each run of a ``-m`` sweep as a SLURM job.
  Its job parameters follow the trainer: ``nodes = trainer.num_nodes``, ``tasks_per_node = gpus_per_node =
  trainer.devices`` (one task per GPU: Lightning's SLURM environment then starts no processes of its own), so
  ``trainer.devices=8 trainer.num_nodes=2`` asks SLURM for 2 nodes x 8 GPUs x 8 tasks. Partition, time,
  memory and CPUs are ``hydra.launcher.partition=... timeout_min=... mem_gb=... cpus_per_task=...``.
  ``hydra/launcher=submitit_local`` runs the same jobs locally (submitit's local executor).
- ``hydra/sweeper=optuna`` (hydra-optuna-sweeper) searches instead of a grid: the sweep overrides become
  its search space (``'method.temperature=tag(log, interval(0.05, 0.5))'``, ``choice(...)``, ``range(...)``) and
  ``hydra.sweeper.n_trials`` runs are chosen by TPE (seeded by ``seed``) against the run's objective, the value
  ``ssl_lightning.train`` returns: ``objective`` (default: the method's, ``val/knn_top1`` or ``val/loss`` for
  the language methods), maximised or minimised as the metric says.

:func:`register` replaces the plugins' default nodes with these (the plugin's schema, our defaults), and without
the plugins installs nodes that fail, when Hydra resolves them, with the pip command that adds them.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ssl_lightning.config import ConfigError
from ssl_lightning.extras import EXTRAS, is_installed, pip_command

FOLLOW_TRAINER = dict(nodes="${trainer.num_nodes}", tasks_per_node="${trainer.devices}", gpus_per_node="${trainer.devices}")


def objective_direction(objective: str | None, method_target: str | None) -> str:
    """``minimize`` for losses (``val/loss``; the language methods' default objective), else ``maximize``."""
    if objective is None:
        language = str(method_target).rsplit(".", 1)[-1] in ("MLM", "CLM")
        return "minimize" if language else "maximize"
    return "minimize" if "loss" in objective.rsplit("/", 1)[-1] else "maximize"


def _missing_extra(extra: str) -> None:
    module, feature = EXTRAS[extra]
    raise ConfigError(f"{feature} needs the Hydra plugin {module.split('.')[-1]}, which is not installed: {pip_command(extra)}")


def register() -> None:
    """Store the launcher and sweeper nodes (idempotent; before Hydra composes, i.e. at ``ssl_lightning.train`` import)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's one-time plugin scan re-runs the plugins' own ConfigStore entries: let it run first
    OmegaConf.register_new_resolver("objective_direction", objective_direction, replace=True)
    OmegaConf.register_new_resolver("ssl_missing_extra", _missing_extra, replace=True)
    store = ConfigStore.instance()
    if is_installed(EXTRAS["cluster"][0]):
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

        store.store(group="hydra/launcher", name="submitit_slurm", provider="ssl_lightning",
                    node=SlurmQueueConf(**FOLLOW_TRAINER))  # type: ignore[arg-type]
        store.store(group="hydra/launcher", name="submitit_local", provider="ssl_lightning",
                    node=LocalQueueConf(**FOLLOW_TRAINER))  # type: ignore[arg-type]
    else:
        for name in ("submitit_slurm", "submitit_local"):
            store.store(group="hydra/launcher", name=name, provider="ssl_lightning",
                        node={"_target_": "${ssl_missing_extra:cluster}"})
    if is_installed(EXTRAS["optuna"][0]):
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf, TPESamplerConfig

        node = OptunaSweeperConf(sampler=TPESamplerConfig(seed="${seed}"),  # type: ignore[arg-type]
                                 direction="${objective_direction:${objective},${method._target_}}",
                                 study_name="ssl_lightning")
        store.store(group="hydra/sweeper", name="optuna", provider="ssl_lightning", node=node)
    else:
        store.store(group="hydra/sweeper", name="optuna", provider="ssl_lightning",
                    node={"_target_": "${ssl_missing_extra:optuna}"})
