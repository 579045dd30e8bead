"""GPU acceptance: one command that proves on a real GPU what the CPU test suite cannot, and writes a report.

    make gpu-check                                   # or: python -m ssl_lightning.gpu_check [out=FILE] [quick=true]

Runs, each as its own process with a time limit, and records pass/fail, wall time and the numbers it printed:

1. the GPU tests (``pytest -m gpu``: bf16 steps, sync-free steps under ``torch.cuda.set_sync_debug_mode("error")``,
   compile capture, SyncBatchNorm and kNN memory, NCCL equivalence where two GPUs are visible);
2. every method for 20 steps in bf16 (``trainer=gpu``) on made-up 32-px images (the language methods on the bundled
   corpus), on one GPU and, where more are visible, on all of them: median step time and peak memory per method;
3. the step benchmark in bf16 (``python -m ssl_lightning.bench``: ours vs. the plain loop, images/s, peak memory);
4. the three evaluation protocols (kNN, linear, fine-tuning) with 2 devices (1 where only one is visible) on the
   checkpoint of the SimCLR run of step 2.

The report (markdown, ``gpu-check.md`` in the working directory unless ``out=``) has a table per part. Without CUDA
it says there is nothing to run and exits 0. Sized to finish within 10 minutes on one GPU.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

IMAGE_METHODS = ("simclr", "byol", "moco", "mocov3", "simsiam", "swav", "barlow_twins", "vicreg", "rotation",
                 "jigsaw", "mae", "beit")
TEXT_METHODS = ("clm", "mlm")
# what a method needs on top of the common overrides (ViTs at 32 px; BEiT's tokenizer fit kept short)
EXTRA = {
    "mae": ["backbone=vit_tiny"],
    "beit": ["backbone=vit_tiny", "method.tokenizer_fit_images=512", "method.tokenizer_fit_patches=8192",
             "method.tokenizer_fit_iters=5"],
}
IMAGE_DATA = ["data=synthetic", "data.image_size=32", "data.num_samples=4096", "data.batch_size=128"]
QUIET = ["trainer.enable_model_summary=false", "~callbacks.view_grid", "~callbacks.embedding_projector",
         "~callbacks.knn", "~callbacks.linear_probe", "trainer.limit_val_batches=0"]


class StepStats(Callback):
    """Per-step wall time (synchronised) and peak CUDA memory, written to ``<dir>/gpu_stats.json`` at the end."""

    def __init__(self, dirpath: str, warmup: int = 3):
        self.dirpath, self.warmup = dirpath, warmup
        self._marks: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.warmup:
            torch.cuda.synchronize()
            self._marks.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.cuda.synchronize()
        self._marks.append(time.perf_counter())
        if trainer.is_global_zero:
            times = [b - a for a, b in zip(self._marks, self._marks[1:])]
            stats = {"step_ms": 1e3 * statistics.median(times) if times else None,
                     "peak_mib": torch.cuda.max_memory_allocated() / 2**20, "steps": trainer.global_step}
            Path(self.dirpath, "gpu_stats.json").write_text(json.dumps(stats))


@dataclass
class Result:
    part: str
    name: str
    ok: bool
    seconds: float
    details: dict = field(default_factory=dict)
    output: str = ""

    @property
    def tail(self) -> str:
        return self.output[-2000:]


def run(part: str, name: str, command: list[str], timeout: int) -> Result:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        ok, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        ok, output = False, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
    print(f"[{'ok' if ok else 'FAIL'}] {part}: {name} ({time.perf_counter() - start:.0f} s)", flush=True)
    return Result(part, name, ok, time.perf_counter() - start, output=output)


def train_command(method: str, devices: int, out: Path) -> list[str]:
    data = [] if method in TEXT_METHODS else IMAGE_DATA
    return [sys.executable, "-m", "ssl_lightning.train", f"method={method}", "trainer=gpu", f"trainer.devices={devices}",
            "trainer.max_steps=20", *data, *EXTRA.get(method, []), *QUIET,
            f"+callbacks.gpu_stats._target_={__name__}.StepStats", f"+callbacks.gpu_stats.dirpath={out}",
            f"hydra.run.dir={out}"]


def check_methods(devices: int, root: Path, timeout: int) -> list[Result]:
    results = []
    for method in (*IMAGE_METHODS, *TEXT_METHODS):
        out = root / f"{method}-{devices}gpu"
        result = run(f"train, {devices} GPU", method, train_command(method, devices, out), timeout)
        stats = out / "gpu_stats.json"
        if result.ok and stats.exists():
            result.details = json.loads(stats.read_text())
        results.append(result)
    return results


def check_eval(ckpt: Path, devices: int, root: Path, timeout: int) -> list[Result]:
    results = []
    for protocol, extra in (("knn", []), ("linear", ["protocol.epochs=2"]), ("finetune", ["protocol.epochs=1"])):
        command = [sys.executable, "-m", "ssl_lightning.eval", f"ckpt={ckpt}", f"protocol={protocol}", *extra,
                   *IMAGE_DATA, f"fabric.devices={devices}", "fabric.precision=bf16-mixed",
                   f"hydra.run.dir={root / f'eval-{protocol}'}"]
        result = run(f"eval, {devices} devices", protocol, command, timeout)
        lines = [line for line in result.tail.splitlines() if "top1" in line or "top-1" in line]
        result.details = {"summary": lines[-1].strip()[:100]} if result.ok and lines else {}
        results.append(result)
    return results


def report(results: list[Result], seconds: float, device: str) -> str:
    """The markdown report: a summary line, a table per part, the benchmark's table, the tail of every failure."""
    lines = [f"# GPU check: {device}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, lightning {L.__version__}; {seconds / 60:.1f} min; "
             f"{sum(r.ok for r in results)} of {len(results)} checks passed.", ""]
    for part in dict.fromkeys(r.part for r in results):
        lines += [f"## {part}", "", "| check | result | wall s | step ms | peak MiB | notes |", "|---|---|---|---|---|---|"]
        for r in (r for r in results if r.part == part):
            step, peak = r.details.get("step_ms"), r.details.get("peak_mib")
            note = r.details.get("summary", "")
            if not r.ok and r.tail.strip():
                note = r.tail.strip().splitlines()[-1][:100]
            lines.append(f"| {r.name} | {'pass' if r.ok else 'FAIL'} | {r.seconds:.0f} | "
                         f"{f'{step:.1f}' if step else ''} | {f'{peak:.0f}' if peak else ''} | {note} |")
        lines.append("")
    for r in results:
        if r.details.get("table"):
            lines += [f"### {r.part}: {r.name}", "", "```", r.details["table"].strip(), "```", ""]
    failed = [r for r in results if not r.ok]
    for r in failed:
        lines += [f"### {r.part}: {r.name} (failed)", "", "```", r.tail.strip()[-1500:], "```", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible here, so there is nothing to run. Run `make gpu-check` on a "
              "machine with an NVIDIA GPU (the CPU test suite is `make test`).")
        return 0
    out = Path(options.get("out", "gpu-check.md"))
    root = Path(options.get("dir", "outputs/gpu-check"))
    root.mkdir(parents=True, exist_ok=True)
    quick = options.get("quick", "false") == "true"
    start, results = time.perf_counter(), []
    env_tests = run("tests", "pytest -m gpu", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
                    timeout=240)
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", env_tests.tail, flags=re.M)
    env_tests.details = {"summary": summary[-1] if summary else ""}
    results.append(env_tests)
    results += check_methods(1, root, timeout=90)
    gpus = torch.cuda.device_count()
    if gpus > 1 and not quick:
        results += check_methods(gpus, root, timeout=120)
    bench = run("benchmark (bf16)", "ours vs plain, every method",
                [sys.executable, "-m", "ssl_lightning.bench", "trainer.precision=bf16-mixed", "bench.steps=5",
                 "bench.rounds=2", f"hydra.run.dir={root / 'bench'}"], timeout=300)
    tables = bench.output.split("\nTraining step, ours (Lightning) vs. plain PyTorch")
    bench.details = {"table": "Training step, ours (Lightning) vs. plain PyTorch" + tables[-1] if len(tables) > 1 else ""}
    results.append(bench)
    ckpt = root / "simclr-1gpu" / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        results += check_eval(ckpt, min(2, gpus), root, timeout=120)
    text = report(results, time.perf_counter() - start, f"{torch.cuda.get_device_name()} x {gpus}")
    out.write_text(text + "\n")
    print(f"\n{text}\nReport written to {out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
