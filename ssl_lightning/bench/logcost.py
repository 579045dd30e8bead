"""What Lightning's ``self.log`` costs a training step, and what logging per-step values only on the steps a
logger writes saves (:func:`~ssl_lightning.callbacks.steps.step_logged`, behind every method's ``log_step``).

    python -m ssl_lightning.bench logging                       # 8 values a step (DINO logs 8-10), 600 steps
    python -m ssl_lightning.bench logging values=2 steps=1000 rounds=5 every=10

A tiny model, so that a step's time is mostly the loop's own, in one process on the CPU. Three loops of the
same Lightning Trainer train it: no ``self.log`` at all (the floor), ``values`` calls of ``self.log`` every step
(what the methods did), and the same values logged only where :func:`step_logged` says a logger writes
(``trainer.log_every_n_steps=every``). They alternate for ``rounds`` rounds, each round in a different order;
the median step time of each (after 50 warm-up steps) is printed with its excess over the floor.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import lightning as L
import torch

from ssl_lightning.bench.common import parse_settings
from ssl_lightning.callbacks.steps import step_logged


@dataclass
class Settings:
    values: int = 8
    steps: int = 600
    rounds: int = 3
    every: int = 10


class _Tiny(L.LightningModule):
    def __init__(self, values: int, mode: str):
        super().__init__()
        self.values, self.mode, self.layer, self.ends = values, mode, torch.nn.Linear(8, 1), []

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).square().mean()
        if self.mode == "every step" or (self.mode == "log_step" and step_logged(self.trainer)):
            for i in range(self.values):
                self.log(f"train/value{i}", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def step_times(s: Settings, mode: str) -> list[float]:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(2 * s.steps, 8)), batch_size=2)
    model = _Tiny(s.values if mode != "no logging" else 0, mode)
    trainer = L.Trainer(max_steps=s.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=s.every)
    trainer.fit(model, data)
    return [b - a for a, b in zip(model.ends[50:], model.ends[51:])]


def main() -> None:
    s = parse_settings(Settings(), sys.argv[1:], "logging")
    warnings.filterwarnings("ignore")
    modes = ["no logging", "every step", "log_step"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(s.rounds):
        for mode in modes[r % 3:] + modes[: r % 3]:
            times[mode] += step_times(s, mode)
    floor = statistics.median(times["no logging"])
    print(f"Lightning loop, tiny model, CPU ({torch.get_num_threads()} threads): {asdict(s)}")
    print(f"{'':<28} {'ms/step':>8} {'over floor':>11} {'per value':>10}")
    for mode in modes:
        t = statistics.median(times[mode])
        per = f"{1e3 * (t - floor) / s.values:>10.3f}" if mode != "no logging" else f"{'':>10}"
        name = {"no logging": "no self.log (floor)", "every step": f"self.log x {s.values} every step",
                "log_step": f"log_step x {s.values} (every {s.every})"}[mode]
        print(f"{name:<28} {1e3 * t:>8.3f} {1e3 * (t - floor):>11.3f} {per}")


if __name__ == "__main__":
    main()
