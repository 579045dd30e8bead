"""Hydra and Lightning's DDP launchers (the Trainer's for ``train``, Fabric's for ``eval``), made to agree
(single runs and multiruns).

With ``trainer.devices=N`` on one machine, Lightning starts ranks 1..N-1 by running the script again. Its
stock command re-runs ``sys.argv``: under ``-m`` every child would start the *whole sweep* again (a second
sweep directory, jobs out of step with rank 0). And after a multirun job, rank 0 keeps the process group and
the ``LOCAL_RANK`` it set for itself, so the next job believes its processes were created externally and
waits forever for ranks that never start. Here each child runs exactly its rank-0 job (that job's own
overrides, written to that job's output directory, without a second ``.hydra/``), and each multirun job
leaves the process group and the environment as it found them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd

# command-line flags that choose the config (kept for the child); every other flag (-m, --info, ...) is not
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Hydra settings that belong to the sweep or to rank 0, not to the child's single run
_DROPPED_HYDRA = ("hydra.mode", "hydra.run.", "hydra.sweep.", "hydra.job.name", "hydra.output_subdir",
                  "hydra/launcher", "hydra/sweeper", "hydra.launcher.", "hydra.sweeper.")
_PARENT_ENV = "SSL_LIGHTNING_RANK0_PID"
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def child_command(local_rank: int, module: str = "ssl_lightning.train") -> tuple[list[str], str]:
    """The command and working directory of local rank ``local_rank`` > 0 for the current Hydra job of
    ``python -m module``."""
    hc = HydraConfig.get()
    flags, argv = [], sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.split("=", 1)[0] in _CONFIG_FLAGS:
            flags += [arg] if "=" in arg else argv[i : i + 2]
    hydra_overrides = [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_DROPPED_HYDRA)]
    # the parent's pid in the environment marks a child of this launcher (see leave_after_rank0)
    command = ["env", f"{_PARENT_ENV}={os.getpid()}", sys.executable, "-m", module, *flags, *hc.overrides.task, *hydra_overrides,
               "hydra.mode=RUN", f'hydra.run.dir="{hc.runtime.output_dir}"', "hydra.output_subdir=null",
               f"hydra.job.name={module.rsplit('.', 1)[-1]}_ddp_process_{local_rank}"]
    return command, get_original_cwd()


def install(module: str = "ssl_lightning.train") -> None:
    """Make Lightning's subprocess launchers (the Trainer's and Fabric's) start children with
    :func:`child_command` for ``python -m module``."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    for launcher in (trainer_launcher, fabric_launcher):
        if not hasattr(launcher, "_hydra_subprocess_cmd"):
            raise RuntimeError("this Lightning version has no _hydra_subprocess_cmd: update ssl_lightning.launch")
        launcher._hydra_subprocess_cmd = lambda local_rank: child_command(local_rank, module)


@contextmanager
def hydra_job() -> Iterator[None]:
    """Around one Hydra job: in a multirun, tear down the job's process group and restore the launcher's
    environment variables afterwards, so that the next job launches its own ranks again."""
    saved = {k: os.environ.get(k) for k in _LAUNCHER_ENV}
    try:
        yield
    finally:
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def leave_after_rank0(timeout_s: float = 60.0) -> None:
    """In a child rank that this launcher started, leaving on a fault that every rank meets at the same step
    (a non-finite loss, a preemption): wait until rank 0, its parent, has exited. Lightning's launcher
    SIGKILLs every rank as soon as a child exits with an error, which would otherwise cut rank 0 off while
    it still writes its checkpoint or its message. A no-op in rank 0 and under external launchers."""
    parent = os.environ.get(_PARENT_ENV)
    if parent is None or os.getpid() == int(parent):
        return
    deadline = time.monotonic() + timeout_s
    while os.getppid() == int(parent) and time.monotonic() < deadline:
        time.sleep(0.05)
