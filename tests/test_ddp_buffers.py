"""Buffers under DDP: DDP broadcasts only the buffers that differ between ranks (per-device BatchNorm
statistics), never a queue; per-rank statistics (BEiT's code histogram) are summed over ranks, not
overwritten by rank 0's, so 2 gloo ranks log what 1 process logs."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from hydra.utils import instantiate
from torch.nn.parallel import DistributedDataParallel

from ssl_lightning.nn import convert_sync_batchnorm
from tests.conftest import compose_config
from tests.methods.test_training import SMALL_HEADS
from tests.test_ddp import _free_port


def build(tmp_path, method: str, *overrides: str):
    cfg = compose_config(tmp_path, f"method={method}", *SMALL_HEADS[method], *overrides)
    return instantiate(cfg.method, backbone=instantiate(cfg.backbone))


def test_per_device_batchnorm_statistics_are_broadcast_and_the_queue_is_not(tmp_path):
    model = build(tmp_path, "moco")  # the paper's Shuffle-BN: per-device BatchNorm statistics
    model.configure_model()
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert {"queue", "queue_ptr", "queue_filled"} <= ignored
    assert not any("running_mean" in name or "running_var" in name for name in ignored)
    assert "backbone.bn1.running_mean" in dict(model.named_buffers())

    synced = build(tmp_path, "byol")  # SyncBatchNorm everywhere (what configure_model does on several ranks)
    convert_sync_batchnorm(synced)
    assert synced.replicated_buffers() == [name for name, _ in synced.named_buffers()]


def test_ddp_skips_the_replicated_buffers(tmp_path):
    """What DDP itself decides from the list (one gloo rank): MoCo broadcasts its BatchNorm statistics only."""
    model = build(tmp_path, "moco")
    model.configure_model()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        ddp = DistributedDataParallel(model)
        broadcast = {id(b) for b in ddp.modules_buffers}
        names = {name for name, b in model.named_buffers() if id(b) in broadcast}
        assert names and all(n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for n in names)
        assert id(model.queue) not in broadcast
        beit = build(tmp_path, "beit")
        beit.configure_model()
        assert not DistributedDataParallel(beit).will_sync_module_buffers()  # nothing to broadcast: no collective
    finally:
        dist.destroy_process_group()


BEIT = [sys.executable, "-m", "ssl_lightning.train", "method=beit", "data=synthetic",
        "data.num_samples=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "callbacks=none",
        "trainer.enable_model_summary=false", "logger=csv", *SMALL_HEADS["beit"], "method.tokenizer_fit_images=32"]


def _codebook_metrics(run: Path, devices: int, batch_size: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    accelerator = [] if any(a.startswith("trainer.accelerator=") for a in BEIT) else ["trainer.accelerator=cpu"]
    command = [*BEIT, *accelerator, f"trainer.devices={devices}", f"data.batch_size={batch_size}", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(command, cwd=run.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    return {k: metrics[k] for k in ("train/codebook_usage", "train/codebook_perplexity")}


@pytest.mark.slow  # two CLI runs (one with 2 ranks), each fitting its k-means tokenizer: ~30 s on 2 cores
def test_beit_codebook_statistics_on_two_ranks_equal_one_process(tmp_path):
    """The epoch's target tokens are the same images, augmented and masked from (seed, epoch, index) alike,
    whether 1 process takes batches of 8 or 2 ranks batches of 4: the logged histogram statistics must agree
    (with rank 0's counts broadcast over rank 1's every step, the perplexity would not)."""
    one = _codebook_metrics(tmp_path / "one", devices=1, batch_size=8)
    two = _codebook_metrics(tmp_path / "two", devices=2, batch_size=4)
    assert two["train/codebook_usage"] == pytest.approx(one["train/codebook_usage"], rel=1e-6)
    assert two["train/codebook_perplexity"] == pytest.approx(one["train/codebook_perplexity"], rel=1e-6)
    assert one["train/codebook_perplexity"] > 1
