"""DDP equivalence for DINO and iBOT: 2 gloo ranks x B take the same steps as 1 process with the 2B samples.

Each method is built from the real Hydra configs (tiny ViT and heads, float64) and steps on its rank's half
of a fixed batch of views (and, for iBOT, patch masks); gradients are averaged over ranks as DDP does, plain
SGD steps, then the method's update rules run: the frozen last layer (epoch 0), the teacher EMA and the
center update, whose all-reduce makes the center that of the global batch. The mean of the ranks' losses,
every parameter, both teachers and the centers after every step must match the single process.
"""

from __future__ import annotations

import datetime
import os
import socket
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra.utils import instantiate

from ssl_lightning.callbacks import FreezeLastLayer, ema_update_
from tests.conftest import compose_config

WORLD, B, STEPS, LR = 2, 3, 2, 0.05
SMALL = ["+backbone.depth=1", "+backbone.embed_dim=32", "+backbone.num_heads=2", "method.out_dim=32",
         "method.hidden_dim=16", "method.bottleneck_dim=8"]
METHODS = ("dino", "ibot")


def build(method: str, tmp: Path):
    cfg = compose_config(tmp, f"method={method}", *SMALL)
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).double()
    model.log = lambda *a, **k: None  # no trainer attached
    model.log_lr = lambda: None
    transform = instantiate(cfg.augment)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(WORLD * B, 3, s, s, generator=g, dtype=torch.float64) for s in transform.view_sizes]
    if method == "ibot":
        grid = model.backbone.grid_size
        views.append(torch.rand(WORLD * B, 2, grid * grid, generator=g) < 0.4)  # (B, G, N) masks
    return model, views


def run_steps(model, views, grad_mean) -> dict:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR)
    freeze = FreezeLastLayer(1)
    losses, states = [], []
    for step in range(STEPS):
        out = model.training_step((views, None), step)
        optimizer.zero_grad()
        out["loss"].backward()
        grad_mean(params)
        model.configure_gradient_clipping(optimizer)  # per-parameter clipping, as in training
        freeze.on_before_optimizer_step(SimpleNamespace(current_epoch=step), model, optimizer)  # frozen at step 0
        optimizer.step()
        for student, teacher in model.momentum_pairs():
            ema_update_(list(teacher.parameters()), list(student.parameters()), 0.9)
        model.update_center()  # CenterUpdate's rule: all-reduce of the step's sums
        losses.append(out["loss"].detach())
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return {"losses": torch.stack(losses), "states": states}


def _ddp_grad_mean(params) -> None:
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(WORLD)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
        for method in METHODS:
            model, views = build(method, Path(out_dir))
            mine = [v[rank * B : (rank + 1) * B] for v in views]
            result[method] = run_steps(model, mine, _ddp_grad_mean)
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
    out = tmp_path_factory.mktemp("dino_ddp")
    port = _free_port()
    procs = [mp.get_context("spawn").Process(target=_worker, args=(r, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        if p.is_alive():
            p.terminate()
    files = [out / f"rank{r}.pt" for r in range(WORLD)]
    assert all(f.is_file() for f in files), "a rank died without a result"
    results = [torch.load(f, weights_only=False) for f in files]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results, out


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_equal_one_process_with_the_global_batch(ranks, method):
    results, out = ranks
    model, views = build(method, out)
    single = run_steps(model, views, lambda params: None)
    torch.testing.assert_close(results[0][method]["mean_loss"], single["losses"], rtol=1e-6, atol=1e-6)
    for step in range(STEPS):
        for key, value in single["states"][step].items():
            for r in range(WORLD):
                torch.testing.assert_close(results[r][method]["states"][step][key], value, rtol=1e-6, atol=1e-6,
                                           msg=lambda m, k=key, s=step: f"{method} step {s} {k}: {m}")
    final = single["states"][-1]
    assert final["center"].abs().sum() > 0  # the center moved
    if method == "ibot":
        assert final["patch_center"].abs().sum() > 0
