"""The kNN bank's memory per rank: 2 gloo ranks holding their shards against one process holding the whole bank.

    python -m ssl_lightning.bench knn                          # 40,000 x 512 bank, 4,000 queries, 100 classes
    python -m ssl_lightning.bench knn bank=100000 dim=2048 queries=10000

Made-up features (the bank is what is measured, not a backbone). Prints, for one process and for each rank:
the bytes of the bank it holds (bf16 features + labels), what the former all-gathered fp32 bank took, the
peak resident memory of the scoring, the scoring time, and the ranks' figure over one process's (target
<= 0.55); and checks that the ranks' predictions equal one process's. Not a timed test.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ssl_lightning.bench.common import parse_settings, peak_memory_mib, reset_peak_memory, spawn_gloo
from ssl_lightning.callbacks.knn import knn_scores


@dataclass
class Settings:
    bank: int = 40000
    dim: int = 512
    queries: int = 4000
    classes: int = 100
    k: int = 200
    world: int = 2


def parse(argv: list[str]) -> Settings:
    return parse_settings(Settings(), argv, "knn")


def data(s: Settings):
    """Clustered features: the bank (N, D), its labels, the queries (M, D) and theirs (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(s.classes, s.dim, generator=g)
    bank_y, query_y = torch.randint(0, s.classes, (s.bank,), generator=g), torch.randint(0, s.classes, (s.queries,), generator=g)
    bank = centers[bank_y] + 2.0 * torch.randn(s.bank, s.dim, generator=g)
    queries = centers[query_y] + 2.0 * torch.randn(s.queries, s.dim, generator=g)
    return bank, bank_y, queries, query_y


def run(rank: int, world: int, s: Settings) -> dict:
    """This rank's strided shard (the eval loaders' ShardedSampler), stored as the kNN callback stores it."""
    bank, bank_y, queries, query_y = data(s)
    bank = F.normalize(bank[rank::world], dim=1).to(torch.bfloat16)  # (N / W, D)
    bank_y, queries = bank_y[rank::world], queries[rank::world]
    reset_peak_memory(torch.device("cpu"))
    start = time.perf_counter()
    scores = knn_scores(queries, bank, bank_y, s.classes, s.k)
    seconds = time.perf_counter() - start
    return {"rows": bank.shape[0], "bank_mib": (bank.nbytes + bank_y.nbytes) / 2**20, "peak_mib": peak_memory_mib(torch.device("cpu")),
            "seconds": seconds, "pred": scores.argmax(dim=1), "query_rows": torch.arange(s.queries)[rank::world]}


def _rank(rank: int, s: Settings) -> dict:
    return run(rank, s.world, s)


def main() -> None:
    s = parse(sys.argv[1:])
    torch.set_num_threads(1)
    print(f"kNN bank, {asdict(s)}")
    one = spawn_gloo(_rank, 1, Settings(**{**asdict(s), "world": 1}))[0]
    ranks = spawn_gloo(_rank, s.world, s)
    pred = torch.empty(s.queries, dtype=torch.long)
    for r in ranks:
        pred[r["query_rows"]] = r["pred"]
    gathered_fp32 = s.bank * (s.dim * 4 + 8) / 2**20
    print(f"{'':>10} {'bank rows':>10} {'bank MiB':>9} {'peak RSS MiB':>13} {'seconds':>8}")
    print(f"{'1 process':>10} {one['rows']:>10} {one['bank_mib']:>9.1f} {one['peak_mib']:>13.1f} {one['seconds']:>8.2f}")
    for i, r in enumerate(ranks):
        print(f"{'rank ' + str(i):>10} {r['rows']:>10} {r['bank_mib']:>9.1f} {r['peak_mib']:>13.1f} {r['seconds']:>8.2f}")
    worst = max(r["bank_mib"] for r in ranks)
    print(f"per-rank bank / 1-process bank: {worst / one['bank_mib']:.3f} (target <= 0.55); "
          f"against the former all-gathered fp32 bank on every rank ({gathered_fp32:.1f} MiB): {worst / gathered_fp32:.3f}")
    print(f"predictions of {s.world} ranks equal one process's: {bool(torch.equal(pred, one['pred']))}")
