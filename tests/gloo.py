"""Run a function on several gloo ranks (spawned CPU processes) and collect each rank's result, or in this
process inside a one-rank group. ``tests/test_ddp.py`` keeps its own module-wide pool; smaller cases use this."""

from __future__ import annotations

import contextlib
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init: str, out: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # several processes on a small machine
    try:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        result = fn(rank, *args)
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out) / f"rank{rank}.pt")


def run_ranks(fn: Callable, world: int = 2, *args, timeout: float = 300) -> list:
    """``fn(rank, *args)`` on ``world`` spawned gloo ranks (``fn`` must be importable: a module-level function);
    returns the ranks' results in rank order. A rank's exception fails the caller with its traceback."""
    with tempfile.TemporaryDirectory() as out:
        init = f"file://{out}/store"
        procs = [mp.get_context("spawn").Process(target=_worker, args=(r, world, init, out, fn, args)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=timeout)
            if p.is_alive():
                p.terminate()
                p.join()
        files = [Path(out) / f"rank{r}.pt" for r in range(world)]
        assert all(f.is_file() for f in files), "a rank died without a result"
        results = [torch.load(f, weights_only=False) for f in files]
    for r, res in enumerate(results):
        assert not (isinstance(res, dict) and "error" in res), f"rank {r} failed:\n{res['error']}"
    return results


@contextlib.contextmanager
def one_rank_group() -> Iterator[None]:
    """A gloo process group of one rank in this process, destroyed on exit (other tests see none)."""
    assert not dist.is_initialized()
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
