"""DDP equivalence: 2 ranks x batch B take the same optimisation step as 1 process with the 2B samples.

Two gloo processes are spawned once (module fixture) and run every case: each method is built from the real
Hydra configs (tiny heads, float64), converted to SyncBatchNorm by its own ``configure_model`` hook (the
methods' YAML defaults), and steps on its rank's half of a fixed batch of views. Gradients are averaged over
ranks exactly as DDP does (all_reduce SUM, then divide by the world size), then plain SGD steps. This
process, which has no process group, runs the same steps on the whole batch with plain BatchNorm; the
mean of the ranks' losses, the parameters after every step, the MoCo and SwAV queues and the EMA teachers
must agree. A SyncBatchNorm unit case and the ``python -m ssl_lightning.train`` CLI with
``trainer.devices=2`` (single run and ``-m`` multirun) are checked here too.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra.utils import instantiate
from torch import nn

from ssl_lightning.callbacks import ema_update_
from ssl_lightning.nn import SyncBatchNorm
from tests.conftest import compose_config
from tests.methods.test_training import SMALL_HEADS

WORLD, B = 2, 4  # 2 ranks x 4 samples = the single process's 8
LR = 0.05
CASES = {  # method -> (extra overrides, optimisation steps)
    "simclr": ([], 1),
    # SyncBN instead of the paper's Shuffle-BN (which is per-device BN by design; tested on its own below);
    # symmetric: 2 keys per image, the harder enqueue order
    "moco": (["method.symmetric=true", "method.sync_batchnorm=true", "method.shuffle_bn=false"], 3),
    "swav": (["method.freeze_prototypes_epochs=0", "method.queue_length=16", "method.queue_start_epoch=0"], 1),
    "barlow_twins": ([], 1),
    "vicreg": ([], 1),
    "byol": ([], 3),
    "simsiam": ([], 1),  # beyond the list: the other BatchNorm-statistics methods
    "mocov3": ([], 2),
}
TINY = ["data.image_size=8"]  # 8-px images: the CIFAR-stem ResNet-18 still has BatchNorm2d everywhere
# The models run in float64, but the pure losses compute in fp32 by design (and SwAV's Sinkhorn too), so
# agreement is to fp32 rounding; a wrong world-size factor or a missing gather is off by orders more.
TOL = dict(rtol=1e-6, atol=1e-6)


def build(method: str, tmp: Path):
    overrides, steps = CASES[method]
    cfg = compose_config(tmp, f"method={method}", *SMALL_HEADS[method], *TINY, *overrides)
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).double()
    model.log = lambda *a, **k: None  # no trainer attached
    model.log_lr = lambda: None
    transform = instantiate(cfg.augment)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(WORLD * B, 3, s, s, generator=g, dtype=torch.float64) for s in transform.view_sizes]
    return model, views, steps


def run_steps(model, views, steps: int, grad_mean) -> dict:
    """``steps`` optimisation steps on ``views`` through the method's real training_step and update rules."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR)
    losses, history = [], []
    for step in range(steps):
        out = model.training_step((views, None), step)
        optimizer.zero_grad()
        out["loss"].backward()
        grad_mean(params)
        model.on_before_optimizer_step(optimizer)  # SwAV: frozen prototypes
        optimizer.step()
        model.on_train_batch_end(out, None, step)  # SwAV: prototypes back on the sphere
        if hasattr(model, "momentum_pairs"):  # MomentumUpdate's rule
            for student, teacher in model.momentum_pairs():
                ema_update_(list(teacher.parameters()), list(student.parameters()), 0.9)
        if out.get("enqueue") is not None:  # QueueUpdate's rule
            model.enqueue(out["enqueue"])
        losses.append(out["loss"].detach())
        history.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return {"losses": torch.stack(losses), "states": history}


def _ddp_grad_mean(params) -> None:
    """What DDP's reducer does: sum the gradients over ranks (in one flat bucket) and divide by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(WORLD)
    torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])


def _syncbn_case(rank: int) -> dict:
    """SyncBatchNorm over 2 ranks vs BatchNorm on the concatenated batch (filled in by the parent)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(WORLD * B, 5, 3, 3, generator=g, dtype=torch.float64) * 3 + 1
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    bn = SyncBatchNorm(5, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    mine = slice(rank * B, (rank + 1) * B)
    xr = x[mine].clone().requires_grad_(True)
    y = bn(xr)
    (y * upstream[mine]).sum().backward()  # the global loss is the sum over ranks
    bn(x[mine] * 2)  # a second batch for the running statistics
    for p in (bn.weight, bn.bias):
        dist.all_reduce(p.grad)
    bn.eval()
    return {"y": y.detach(), "x_grad": xr.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var, "eval": bn(x[mine]).detach()}


def build_shuffle_bn(tmp: Path):
    cfg = compose_config(tmp, "method=moco", *SMALL_HEADS["moco"], *TINY)  # the paper's default: Shuffle-BN
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).double().train()
    x = torch.randn(WORLD * B, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return model, x


def _shuffle_bn_case(rank: int, tmp: Path) -> torch.Tensor:
    model, x = build_shuffle_bn(tmp)
    assert model.shuffle_bn and not model.sync_batchnorm
    model.configure_model()  # no SyncBN
    return model.keys(x[rank * B : (rank + 1) * B])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
        result["syncbn"] = _syncbn_case(rank)
        result["shuffle_bn"] = _shuffle_bn_case(rank, Path(out_dir))
        for method in CASES:
            model, views, steps = build(method, Path(out_dir))
            model.configure_model()  # the Lightning hook: SyncBatchNorm when the YAML asks for it
            mine = [v[rank * B : (rank + 1) * B] for v in views]
            result[method] = run_steps(model, mine, steps, _ddp_grad_mean)
            result[method]["sync_bn_layers"] = sum(isinstance(m, SyncBatchNorm) for m in model.modules())
            losses = result[method]["losses"].clone()
            dist.all_reduce(losses)
            result[method]["mean_loss"] = losses / WORLD
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The two ranks' results, collected on first use (the ranks run while this process computes the
    single-process steps)."""
    out = tmp_path_factory.mktemp("ddp")
    port = _free_port()
    procs = [mp.get_context("spawn").Process(target=_worker, args=(r, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # three processes on a small machine: one thread each is much faster
    state = {"out": out, "procs": procs}
    yield state
    torch.set_num_threads(threads)
    for p in procs:  # only if a test failed before collecting them
        if p.is_alive():
            p.terminate()
            p.join()


def _results(ranks) -> list[dict]:
    if "results" not in ranks:
        for p in ranks["procs"]:
            p.join(timeout=300)
            if p.is_alive():
                p.terminate()
        files = [ranks["out"] / f"rank{r}.pt" for r in range(WORLD)]
        assert all(f.is_file() for f in files), "a rank died without a result"
        ranks["results"] = [torch.load(f, weights_only=False) for f in files]
        for r, res in enumerate(ranks["results"]):
            assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return ranks["results"]


@pytest.mark.parametrize("method", list(CASES))
def test_two_ranks_step_like_one_process(ranks, tmp_path, method):
    model, views, steps = build(method, tmp_path)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    reference = run_steps(model, views, steps, lambda params: None)  # plain BatchNorm over all 2B samples
    results = _results(ranks)
    bn_layers = sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in model.modules())
    assert bn_layers > 0 and all(res[method]["sync_bn_layers"] == bn_layers for res in results)
    # the loss of the global batch: the mean of the ranks' losses
    torch.testing.assert_close(results[0][method]["mean_loss"], reference["losses"], **TOL)
    for step in range(steps):
        ref = reference["states"][step]
        for res in results:
            for key, value in ref.items():  # weights after each step (the update), teachers, queues, BN stats
                torch.testing.assert_close(res[method]["states"][step][key], value, **TOL,
                                           msg=lambda m, key=key, step=step: f"{key} after step {step + 1}: {m}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    # over all the steps: MoCo's first step has no negatives yet (its queue starts empty), so no gradient
    update = max((reference["states"][-1][n] - initial[n]).abs().max().item() for n in names)
    update_diff = max((res[method]["states"][-1][n] - reference["states"][-1][n]).abs().max().item()
                      for res in results for n in names)
    loss_diff = (results[0][method]["mean_loss"] - reference["losses"]).abs().max().item()
    assert update > 1e3 * update_diff  # the step moved the weights, and both ways agree
    print(f"\n{method}: max |loss diff| {loss_diff:.1e}, max |update| {update:.1e}, max |update diff| {update_diff:.1e}")
    # identical on both ranks, bit for bit: the EMA teachers, the queues, every weight
    for key, value in results[0][method]["states"][-1].items():
        assert torch.equal(value, results[1][method]["states"][-1][key]), key


def test_moco_shuffle_bn_encodes_shuffled_shards_and_unshuffles(ranks, tmp_path):
    """Rank r's keys are those of its own samples, encoded (plain per-device BN) within the shard of the
    permuted global batch that their rank drew; without the shuffle they would differ (other BN statistics)."""
    results = _results(ranks)
    model, x = build_shuffle_bn(tmp_path)
    perm = model.shuffle_order(WORLD * B, view=0, device=torch.device("cpu"))  # step 0, first view: every rank draws it
    shards = perm.view(WORLD, B)
    assert set(shards[0].tolist()) != set(range(B))  # the shuffle moves samples across ranks
    keys = torch.cat([model.encode_keys(x[shard]) for shard in shards])[torch.argsort(perm)]  # (W*B, D), in order
    for rank, res in enumerate(results):
        mine = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(res["shuffle_bn"], keys[mine], rtol=0, atol=1e-6)
        assert (res["shuffle_bn"] - model.encode_keys(x[mine])).abs().max() > 1e-3  # local BN would give others


def test_sync_batchnorm_matches_batchnorm_on_the_global_batch(ranks):
    results = _results(ranks)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(WORLD * B, 5, 3, 3, generator=g, dtype=torch.float64) * 3 + 1
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    bn = nn.BatchNorm2d(5, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    x = x.requires_grad_(True)
    y = bn(x)
    (y * upstream).sum().backward()
    bn(x.detach() * 2)
    bn.eval()
    expected = {"y": y.detach(), "x_grad": x.grad, "eval": bn(x.detach()).detach()}
    for rank, res in enumerate(results):
        got = res["syncbn"]
        mine = slice(rank * B, (rank + 1) * B)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value[mine], rtol=0, atol=1e-12, msg=key)
        torch.testing.assert_close(got["w_grad"], bn.weight.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(got["b_grad"], bn.bias.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(got["running_mean"], bn.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(got["running_var"], bn.running_var, rtol=0, atol=1e-12)  # unbiased, as BN


# -- the command line with trainer.devices=2: Lightning re-launches the script for rank 1 ----------------

CLI = [sys.executable, "-m", "ssl_lightning.train", "method=simclr", "trainer.accelerator=cpu", "trainer.devices=2",
       "data=synthetic", "data.image_size=8", "data.num_samples=32", "data.batch_size=4", "trainer.max_steps=2",
       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
       *SMALL_HEADS["simclr"]]


def _run_cli(cwd: Path, *args: str, multirun: bool = False) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    command = [*CLI[:3], *(["-m"] if multirun else []), *CLI[3:], *args]
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: rank 1 included
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # e.g. a job waiting for a rank that was never launched
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]


def _check_run_dir(run: Path, steps: int) -> None:
    """One config.yaml, one .hydra/, TensorBoard events of one process, checkpoints/last.ckpt, and the metrics of
    rank 0 after ``steps`` global steps: nothing written twice by the second rank."""
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").exists()
    assert [p.name for p in run.rglob(".hydra")] == [".hydra"]
    writers = {p.name.split(".")[-2] for p in run.rglob("events.out.tfevents*")}  # events.out.tfevents.T.HOST.PID.N
    assert len(writers) == 1, writers
    assert len([p for p in run.rglob("config.yaml") if p.parent.name != ".hydra"]) == 1
    assert '"global_step": %d' % steps in (run / "metrics.json").read_text()


def test_cli_two_devices_writes_one_run_dir(tmp_path):
    _run_cli(tmp_path, f"hydra.run.dir={tmp_path / 'run'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no second (timestamped) dir from rank 1
    _check_run_dir(tmp_path / "run", steps=2)


@pytest.mark.slow  # ~40 s: two DDP jobs; test_cli_two_devices_writes_one_run_dir covers the launcher in the default suite
def test_cli_two_devices_multirun_one_dir_per_job(tmp_path):
    """Each job's rank 1 runs that job only (not the whole sweep again), and the next job launches its own."""
    _run_cli(tmp_path, "method.temperature=0.1,0.5", "trainer.max_steps=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
             "~callbacks.knn", "~callbacks.linear_probe", "~callbacks.embedding_projector", "~callbacks.view_grid", multirun=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["0", "1", "multirun.yaml"]
    for job, temperature in (("0", 0.1), ("1", 0.5)):
        _check_run_dir(tmp_path / "sweep" / job, steps=1)
        assert f"temperature: {temperature}" in (tmp_path / "sweep" / job / "config.yaml").read_text()


def test_conversion_keeps_parameters_groups_and_teachers(tmp_path):
    """The SyncBN conversion (done in configure_model before DDP and the optimizer) swaps the layers only:
    the same parameter and buffer objects, the same checkpoint keys and parameter groups (BN parameters
    still excluded from decay and LARS), teachers converted like their students, and idempotent."""
    from ssl_lightning.nn import convert_sync_batchnorm

    model, views, _ = build("byol", tmp_path)
    before = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    groups = [[id(p) for p in g["params"]] for g in model.parameter_groups(1e-6)]
    out = model(views[0])
    convert_sync_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in model.modules())
    assert isinstance(model.teacher_backbone.bn1, SyncBatchNorm) and isinstance(model.projector[1], SyncBatchNorm)
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[k] is v for k, v in before.items())
    assert [[id(p) for p in g["params"]] for g in model.parameter_groups(1e-6)] == groups
    torch.testing.assert_close(model(views[0]), out)  # one process: plain BatchNorm
    layers = list(model.modules())
    convert_sync_batchnorm(model)
    assert all(a is b for a, b in zip(layers, model.modules()))


def test_trainer_sync_batchnorm_on_cpu_points_to_method_sync_batchnorm(tmp_path):
    from ssl_lightning import train as train_module
    from ssl_lightning.config import ConfigError

    cfg = compose_config(tmp_path, "trainer.sync_batchnorm=true")
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=True is not allowed: .*method.sync_batchnorm=true"):
        train_module.build(cfg)
