import itertools

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.transforms.permutations import (
    hamming_permutations,
    mean_hamming_distance,
    min_hamming_distance,
    random_permutations,
)


def reference_greedy(num_permutations: int, grid_size: int, seed: int, criterion: str) -> list[tuple[int, ...]]:
    """Noroozi & Favaro (2016), Algorithm 1, with plain Python loops: a random first permutation, then the
    candidate with the largest summed ("mean") or minimum-then-summed ("min") Hamming distance to the set."""
    all_perms = list(itertools.permutations(range(grid_size * grid_size)))
    g = torch.Generator().manual_seed(seed)
    chosen = [all_perms[int(torch.randint(len(all_perms), (1,), generator=g))]]
    while len(chosen) < num_permutations:
        best, best_key = None, None
        for p in all_perms:  # lexicographic order: the first best wins
            if p in chosen:
                continue
            dists = [sum(a != b for a, b in zip(p, q)) for q in chosen]
            key = sum(dists) if criterion == "mean" else (min(dists), sum(dists))
            if best_key is None or key > best_key:
                best, best_key = p, key
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("criterion", ["min", "mean"])
@pytest.mark.parametrize("num_permutations", [1, 5, 24])
def test_matches_the_papers_algorithm_written_out(criterion, num_permutations):
    got = hamming_permutations(num_permutations, grid_size=2, seed=3, criterion=criterion)
    assert [tuple(r) for r in got.tolist()] == reference_greedy(num_permutations, 2, 3, criterion)


def test_set_of_3x3_permutations_has_no_duplicates_and_beats_a_random_set():
    perms = hamming_permutations(100, grid_size=3, seed=0)
    assert perms.shape == (100, 9) and perms.dtype == torch.long
    assert (perms.sort(dim=1).values == torch.arange(9)).all()  # every row is a permutation of the 9 tiles
    assert torch.unique(perms, dim=0).shape[0] == 100
    d_min, d_random = min_hamming_distance(perms), min_hamming_distance(random_permutations(100, 3, seed=0))
    assert d_min == 6 and d_random == 3  # the greedy set is far better separated than a random one
    assert mean_hamming_distance(perms) > mean_hamming_distance(random_permutations(100, 3, seed=0))


def test_paper_criterion_keeps_the_average_but_not_the_minimum():
    paper = hamming_permutations(100, grid_size=3, seed=0, criterion="mean")
    ours = hamming_permutations(100, grid_size=3, seed=0, criterion="min")
    assert mean_hamming_distance(paper) == pytest.approx(mean_hamming_distance(ours), abs=0.05)
    assert min_hamming_distance(paper) < min_hamming_distance(ours)


def test_deterministic_for_a_seed():
    a, b = hamming_permutations(20, 3, seed=1), hamming_permutations(20, 3, seed=1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, hamming_permutations(20, 3, seed=2))
    a[0, 0] = 99  # callers get their own copy: the in-memory cache is not corrupted
    assert hamming_permutations(20, 3, seed=1)[0, 0] != 99


def test_grids_beyond_3x3_select_from_a_seeded_pool():
    perms = hamming_permutations(50, grid_size=4, seed=0)
    assert perms.shape == (50, 16) and torch.unique(perms, dim=0).shape[0] == 50
    assert min_hamming_distance(perms) > min_hamming_distance(random_permutations(50, 4, seed=0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid_size": 1}, r"method.grid_size=1 is not allowed: an integer >= 2"),
        ({"grid_size": 2, "num_permutations": 25},
         r"method.num_permutations=25 is not allowed: an integer from 1 to 24 \(the 4! = 24 permutations of a 2x2 grid\)"),
        ({"num_permutations": 0}, r"method.num_permutations=0 is not allowed"),
        ({"criterion": "max"}, r"method.permutation_criterion='max' is not allowed: one of min, mean"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        hamming_permutations(**{"num_permutations": 10, "grid_size": 3, **kwargs})
