"""Faults decided for all ranks at once, on 2 gloo ranks of ``python -m ssl_lightning.train``: a NaN loss on
rank 1 only (skip: identical weights on both ranks; stop: both exit promptly with the message), and SIGTERM
to both ranks mid-epoch (one preempted checkpoint; ``resume=auto`` ends bit-identical to an uninterrupted
run). The same checks run on NCCL in ``tests/gpu/test_faults.py``."""

from __future__ import annotations

import pytest

from tests import faults


@pytest.mark.slow  # ~25 s; the stop mode (same all-reduced flag) runs in the default suite
def test_nan_on_one_rank_skip_keeps_the_ranks_identical(tmp_path):
    faults.check_nan_on_one_rank_skip(tmp_path, "cpu")


def test_nan_on_one_rank_stop_stops_every_rank(tmp_path):
    faults.check_nan_on_one_rank_stop(tmp_path, "cpu")


@pytest.mark.slow  # three 2-rank trainings (uninterrupted, interrupted, resumed): about a minute on 2 quiet cores
def test_sigterm_to_both_ranks_then_resume_equals_uninterrupted(tmp_path):
    faults.check_sigterm_both_ranks_then_resume(tmp_path, "cpu")
