"""An ImageFolder checked once over 2 gloo ranks: each file is opened by one rank, and both ranks get the
same samples, even when a read fails on one rank only (a transient error)."""

from __future__ import annotations

import datetime
import os
import socket
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from ssl_lightning.data import ImageFolderDataModule
from ssl_lightning.data import datasets

WORLD = 2


def make_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(5):
                Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
        (root / split / "a" / "broken.png").write_bytes(b"not an image")


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
        checked: list[str] = []
        real = datasets._check_image

        def counting(path: str, decode: bool):
            checked.append(path)
            if rank == 1 and path.endswith("b/3.png"):
                return "OSError: transient read failure"  # only this rank sees it
            return real(path, decode)

        datasets._check_image = counting
        dm = ImageFolderDataModule(train_dir=f"{root}/train", val_dir=f"{root}/val", batch_size=2, num_workers=0)
        dm.build_splits()  # every rank at once, as setup() and eval do
        result = {"checked": checked, "train": dm.split("train").samples, "val": dm.split("val").samples,
                  "bad": dm.split("train").bad}
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported by the parent
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(root) / f"rank{rank}.pt")


def test_two_ranks_check_each_file_once_and_agree(tmp_path):
    make_tree(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, str(tmp_path)), nprocs=WORLD, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r}:\n{res['error']}"
    files = sorted(str(p) for p in tmp_path.rglob("*.png"))
    checked = results[0]["checked"] + results[1]["checked"]
    assert sorted(checked) == files  # every file once, over both ranks (not once per rank)
    assert all(len(res["checked"]) <= len(files) // 2 + 1 for res in results)  # half each
    for split in ("train", "val"):
        assert results[0][split] == results[1][split]  # the same samples, in the same order
        assert not any(p.endswith("broken.png") for p, _ in results[0][split])
    # the transient failure counts where it happened (whichever rank checked it), for both ranks alike
    transient = str(tmp_path / "train" / "b" / "3.png")
    assert (transient in results[1]["checked"]) == any(p == transient for p, _ in results[0]["bad"])
