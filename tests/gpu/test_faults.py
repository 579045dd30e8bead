"""The fault checks of ``tests/test_faults_ddp.py`` on 2 GPUs with NCCL (bf16 is not needed for them: they
test the ranks' agreement, not the arithmetic). Skipped without 2 CUDA devices."""

from __future__ import annotations

import pytest
import torch

from tests import faults

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)"),
]


def test_nan_on_one_rank_skip_keeps_the_ranks_identical_nccl(tmp_path):
    faults.check_nan_on_one_rank_skip(tmp_path, "gpu")


def test_nan_on_one_rank_stop_stops_every_rank_nccl(tmp_path):
    faults.check_nan_on_one_rank_stop(tmp_path, "gpu")


def test_sigterm_to_both_ranks_then_resume_equals_uninterrupted_nccl(tmp_path):
    # bit-exact comparison of two GPU runs: cuDNN's and cuBLAS's deterministic algorithms
    faults.check_sigterm_both_ranks_then_resume(tmp_path, "gpu", "trainer.deterministic=true")
