"""The jigsaw permutation set: permutations of the grid's tiles chosen far apart in Hamming distance.

Noroozi & Favaro (2016, Sec. 3.3, Algorithm 1) build the set greedily: start from a random permutation of
all ``n!``, then repeatedly add the permutation that is farthest, in Hamming distance (the number of
positions where two permutations differ), from those already chosen. Their Algorithm 1 (and the reference
selection script) takes "farthest" as the largest *summed* distance to the chosen set (``criterion="mean"``);
``criterion="min"`` (our default) takes the largest *minimum* distance to the chosen set, breaking ties by
the summed distance, which keeps the same average distance and guarantees a larger minimum one (the
quantity the paper's Table 3 ties to transfer performance: puzzles that differ in a few tiles only are
too hard to tell apart). Both are deterministic for a seed.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import torch

from ssl_lightning.config import check

CRITERIA = ("min", "mean")
EXHAUSTIVE_TILES = 9  # up to 9 tiles (3x3) the greedy search runs over all n! permutations (9! = 362,880)
CANDIDATE_POOL = 100_000  # above, over this many seeded random permutations (16! is 2e13)


def num_tiles(grid_size: int) -> int:
    return grid_size * grid_size


def max_permutations(grid_size: int) -> int:
    """How many permutations the greedy search can choose from: all ``n!`` up to 3x3, the candidate pool above."""
    n = num_tiles(grid_size)
    return math.factorial(n) if n <= EXHAUSTIVE_TILES else CANDIDATE_POOL


def check_permutation_args(num_permutations: int, grid_size: int, criterion: str = "min") -> None:
    """Fail with a clear message on a grid below 2, a set larger than the permutations of the grid, or an
    unknown criterion (called by both the method and the transform, so either fails before training)."""
    check(isinstance(grid_size, int) and grid_size >= 2, "method.grid_size", grid_size, "an integer >= 2 (a 2x2 grid or larger)")
    n, limit = num_tiles(grid_size), max_permutations(grid_size)
    space = f"the {n}! = {limit:,} permutations of a {grid_size}x{grid_size} grid" if n <= EXHAUSTIVE_TILES else (
        f"the {limit:,} candidate permutations drawn for a {grid_size}x{grid_size} grid")
    check(isinstance(num_permutations, int) and 1 <= num_permutations <= limit, "method.num_permutations",
          num_permutations, f"an integer from 1 to {limit:,} ({space})")
    check(criterion in CRITERIA, "method.permutation_criterion", criterion, f"one of {', '.join(CRITERIA)}")


@lru_cache(maxsize=2)
def _all_permutations(n: int) -> torch.Tensor:
    """(n!, n) uint8, all permutations of ``range(n)`` in lexicographic order (built by insertion, then sorted)."""
    perms = torch.zeros((1, 0), dtype=torch.uint8)
    for m in range(n):  # insert the value m at every position of every permutation of range(m)
        value = torch.full((perms.shape[0], 1), m, dtype=torch.uint8)
        perms = torch.cat([torch.cat([perms[:, :i], value, perms[:, i:]], dim=1) for i in range(m + 1)])
    key = (perms.long() * n ** torch.arange(n - 1, -1, -1)).sum(dim=1)
    return perms[key.argsort()].contiguous()


def _candidates(n: int, seed: int) -> torch.Tensor:
    """(N, n) uint8 candidate permutations: all of them, or (above 9 tiles) a seeded pool of distinct ones."""
    if n <= EXHAUSTIVE_TILES:
        with _single_thread():
            return _all_permutations(n)
    g = torch.Generator().manual_seed(seed)
    pool = torch.rand(2 * CANDIDATE_POOL, n, generator=g).argsort(dim=1).to(torch.uint8)
    return torch.unique(pool, dim=0)[:CANDIDATE_POOL]  # duplicates among 16!-sized draws are rare; drop them


@contextmanager
def _single_thread():
    """Element-wise ops on a few hundred thousand entries gain little from threads and lose badly when the
    cores are busy (measured: 1000 permutations in 7 s on one thread, 80 s on two contended ones)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=8)
def _select(num_permutations: int, grid_size: int, seed: int, criterion: str) -> torch.Tensor:
    cand = _candidates(num_tiles(grid_size), seed)  # (N, n)
    columns = cand.T.contiguous()  # (n, N): one contiguous row per tile position, for fast comparisons
    n, n_cand = columns.shape
    g = torch.Generator().manual_seed(seed)
    j = int(torch.randint(n_cand, (1,), generator=g))  # Algorithm 1, line 3: a random first permutation
    min_d = torch.full((n_cand,), n, dtype=torch.int32)  # min distance of each candidate to the chosen set
    sum_d = torch.zeros(n_cand, dtype=torch.int32)  # summed distance to the chosen set (<= 16 x 100k)
    d = torch.empty(n_cand, dtype=torch.uint8)
    scale = n * num_permutations + 1  # "min": the min distance first, the summed distance breaks ties
    chosen = []
    for _ in range(num_permutations):
        chosen.append(j)
        d.zero_()
        for i in range(n):  # d = Hamming distance of every candidate to the new member
            d += (columns[i] != columns[i, j]).view(torch.uint8)
        torch.minimum(min_d, d, out=min_d)  # a chosen permutation has distance 0 to itself: min_d = 0
        sum_d += d
        sum_d[j] = -(2**30)  # never chosen twice (its summed distance stays hugely negative)
        score = sum_d if criterion == "mean" else min_d * scale + sum_d
        j = int(score.argmax())  # ties: the first in lexicographic order, so the set is a function of the seed
    return cand[chosen].long()


def hamming_permutations(num_permutations: int = 100, grid_size: int = 3, seed: int = 0, criterion: str = "min") -> torch.Tensor:
    """The greedy maximal-Hamming-distance permutation set, ``(num_permutations, grid_size**2)`` int64.

    Row ``k`` is permutation ``k``: a puzzle of class ``k`` shows, at position ``j``, the tile of cell
    ``perm[k, j]``. Deterministic for ``(num_permutations, grid_size, seed, criterion)``; computed in a
    few seconds for 1000 permutations of 9 tiles (vectorised over all 9! candidates) and cached in memory.
    """
    check_permutation_args(num_permutations, grid_size, criterion)
    with _single_thread():
        return _select(num_permutations, grid_size, seed, criterion).clone()


def random_permutations(num_permutations: int, grid_size: int = 3, seed: int = 0) -> torch.Tensor:
    """``num_permutations`` distinct permutations drawn uniformly: the baseline the greedy set must beat."""
    cand = _candidates(num_tiles(grid_size), seed)
    g = torch.Generator().manual_seed(seed)
    return cand[torch.randperm(cand.shape[0], generator=g)[:num_permutations]].long()


def hamming_distances(perms: torch.Tensor) -> torch.Tensor:
    """(P, P) pairwise Hamming distances of the rows of ``perms`` (P, n)."""
    return (perms[:, None, :] != perms[None, :, :]).sum(dim=-1)


def min_hamming_distance(perms: torch.Tensor) -> int:
    """The smallest Hamming distance between two different rows of ``perms`` (0 if two rows are equal)."""
    if perms.shape[0] < 2:
        return perms.shape[1]
    d = hamming_distances(perms)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())


def mean_hamming_distance(perms: torch.Tensor) -> float:
    """The average Hamming distance over all pairs of different rows (the paper's Table 3 reports both)."""
    p = perms.shape[0]
    if p < 2:
        return float(perms.shape[1])
    return float(hamming_distances(perms).sum()) / (p * (p - 1))
