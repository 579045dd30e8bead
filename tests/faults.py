"""Faults on 2 DDP ranks through ``python -m ssl_lightning.train trainer.devices=2``, shared by the CPU (gloo)
tests in ``tests/test_faults_ddp.py`` and the NCCL tests in ``tests/gpu/test_faults.py``.

The test aids below are Lightning callbacks that the runs add with ``+callbacks.NAME={_target_: ...}``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 6  # 96 images / (2 ranks x 8)
TRAIN = ["method=byol", "method.proj_hidden_dim=32", "method.proj_output_dim=16", "method.pred_hidden_dim=32",
         "method.base_tau=0.9", "data=synthetic", "data.num_samples=96", "data.batch_size=8", "data.image_size=8",
         "data.num_workers=2", "trainer.devices=2", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "logger=csv",
         "callbacks.preemption.check_every_n_steps=1",
         "~callbacks.knn", "~callbacks.linear_probe", "~callbacks.view_grid", "~callbacks.collapse",
         "~callbacks.embedding_projector"]


class NaNOnRank(Callback):
    """The loss of rank ``rank`` becomes NaN at optimizer step ``step`` (the other ranks' stay finite)."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_before_backward(self, trainer, pl_module, loss):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            loss.mul_(float("nan"))


class SaveRankState(Callback):
    """Every rank writes its module's state (``rank{R}.pt`` in ``directory``) when training ends."""

    def __init__(self, directory: str):
        self.directory = Path(directory)

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.directory / f"rank{trainer.global_rank}.pt")


class AnnounceAndSlow(Callback):
    """From step ``step`` on, every rank writes its pid to ``directory/rank{R}.pid`` and slows down, so that a
    test's signal lands mid-epoch."""

    def __init__(self, step: int, directory: str):
        self.step, self.directory = step, Path(directory)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            (self.directory / f"rank{trainer.global_rank}.pid").write_text(str(os.getpid()))
            time.sleep(0.5)


def start(tmp: Path, accelerator: str, *overrides: str) -> subprocess.Popen:
    # one thread per rank in every run: float sums depend on how the work is split, and the resume check
    # compares runs bit for bit; on GPUs the deterministic algorithms (trainer.deterministic) need cuBLAS's
    # fixed workspace
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    command = [sys.executable, "-m", "ssl_lightning.train", *TRAIN, f"trainer.accelerator={accelerator}", *overrides]
    return subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: rank 1 included


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:  # e.g. a rank blocked in a collective the other never reaches
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        raise AssertionError(f"the ranks did not exit within {timeout} s:\n{output[-3000:]}") from None


def callback(name: str, target: str, **args) -> str:
    body = ", ".join(f"{k}: '{v}'" if isinstance(v, (str, Path)) else f"{k}: {v}" for k, v in args.items())
    return f"+callbacks.{name}={{_target_: tests.faults.{target}, {body}}}"


# -- the checks, for any accelerator ----------------------------------------------------------------------


def check_nan_on_one_rank_skip(tmp: Path, accelerator: str, *extra: str) -> None:
    """Rank 1's loss is NaN at step 2: both ranks skip that step, and their weights stay identical and finite."""
    proc = start(tmp, accelerator, *extra, f"hydra.run.dir={tmp / 'run'}", "trainer.max_steps=4", "callbacks.nonfinite.mode=skip",
                 callback("nan", "NaNOnRank", rank=1, step=2), callback("save", "SaveRankState", directory=tmp))
    output = finish(proc)
    assert proc.returncode == 0, output[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    assert '"train/skipped_steps": 1.0' in (tmp / "run" / "metrics.json").read_text()


def check_nan_on_one_rank_stop(tmp: Path, accelerator: str, *extra: str) -> None:
    """Rank 1's loss is NaN at step 2: both ranks stop at once, each with the message, none waits for the other."""
    started = time.monotonic()
    proc = start(tmp, accelerator, *extra, f"hydra.run.dir={tmp / 'run'}", "trainer.max_steps=8",
                 callback("nan", "NaNOnRank", rank=1, step=2))
    output = finish(proc, timeout=240)
    assert proc.returncode == 1, output[-3000:]
    assert output.count("Training stopped: the loss became") == 2, output[-3000:]
    assert "Training stopped: the loss became nan at step 2 (epoch 0)" in output  # rank 1
    assert "Training stopped: the loss became non-finite on another rank" in output  # rank 0
    assert time.monotonic() - started < 200


def check_sigterm_both_ranks_then_resume(tmp: Path, accelerator: str, *extra: str) -> None:
    """SIGTERM to both ranks mid-epoch: one preempted checkpoint; resume=auto ends where an uninterrupted run does."""
    max_steps = 2 * STEPS_PER_EPOCH
    full = start(tmp, accelerator, *extra, f"hydra.run.dir={tmp / 'full'}", f"trainer.max_steps={max_steps}")
    output = finish(full)
    assert full.returncode == 0, output[-3000:]

    run_dir = tmp / "run"
    proc = start(tmp, accelerator, *extra, f"hydra.run.dir={run_dir}", f"trainer.max_steps={max_steps}",
                 callback("slow", "AnnounceAndSlow", step=1, directory=tmp))
    deadline = time.monotonic() + 240
    pids = [tmp / f"rank{r}.pid" for r in range(2)]
    while not all(p.exists() and p.read_text() for p in pids):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "training never reached step 1"
        time.sleep(0.1)
    for p in pids:
        os.kill(int(p.read_text()), signal.SIGTERM)
    output = finish(proc, timeout=180)
    assert proc.returncode == 143, output[-3000:]
    preempted = sorted((run_dir / "checkpoints").glob("preempted-*.ckpt"))
    assert len(preempted) == 1, output[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").resolve() == preempted[0].resolve()
    step = torch.load(preempted[0], weights_only=True)["global_step"]
    assert 0 < step % STEPS_PER_EPOCH and step < max_steps, step  # mid-epoch, before the end

    resumed = start(tmp, accelerator, *extra, f"hydra.run.dir={run_dir}", f"trainer.max_steps={max_steps}", "resume=auto")
    output = finish(resumed)
    assert resumed.returncode == 0, output[-3000:]
    a = torch.load(tmp / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == max_steps
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
