"""make gpu-check: says plainly that there is nothing to run without CUDA, and its report shows every check."""

import pytest
import torch

from ssl_lightning import gpu_check
from ssl_lightning.gpu_check import Result, report, train_command


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: gpu-check would run")
def test_without_cuda_there_is_nothing_to_run(capsys):
    assert gpu_check.main([]) == 0
    assert "no CUDA device is visible here, so there is nothing to run" in capsys.readouterr().out


def test_report_has_a_row_per_check_and_the_tail_of_each_failure():
    results = [
        Result("train, 1 GPU", "simclr", True, 12.0, {"step_ms": 31.5, "peak_mib": 2048.0}),
        Result("train, 1 GPU", "mae", False, 3.0, output="Traceback ...\nRuntimeError: boom"),
        Result("benchmark (bf16)", "ours vs plain", True, 90.0, {"table": "Training step ... simclr 1.02"}),
    ]
    text = report(results, 120.0, "NVIDIA H200 x 1")
    assert text.startswith("# GPU check: NVIDIA H200 x 1") and "2 of 3 checks passed" in text
    assert "| simclr | pass | 12 | 31.5 | 2048 |" in text and "| mae | FAIL |" in text
    assert "RuntimeError: boom" in text and "simclr 1.02" in text


def test_every_method_runs_in_bf16_with_its_step_statistics(tmp_path):
    command = train_command("mae", 1, tmp_path)
    assert "trainer=gpu" in command and "trainer.max_steps=20" in command and "backbone=vit_tiny" in command
    assert f"+callbacks.gpu_stats.dirpath={tmp_path}" in command
