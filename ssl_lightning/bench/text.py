"""nanoGPT's CPU Shakespeare benchmark: our CLM run (``python -m ssl_lightning.train`` with
``experiment=clm_shakespeare_char``) against a plain-PyTorch loop of the same model, in one process.

    python -m ssl_lightning.bench text          # Tiny Shakespeare, downloaded to ./data on first use
    python -m ssl_lightning.bench text data.path=/path/to/input.txt trainer.max_steps=500
    python -m ssl_lightning.bench text trainer.max_steps=300 bench.rounds=5   # the loop's overhead: median ratio

Both loops start from the same initial weights and train with the same configuration (nanoGPT's README CPU
run: character level, block 64, batch 12, 4 layers, 4 heads, 128 wide, dropout 0, 2000 iterations, AdamW
1e-3 with betas 0.9/0.99 and weight decay 0.1 on matrices, 100 warmup iterations then cosine to 1e-4, clipping
1.0). The plain loop samples batches as nanoGPT's ``get_batch`` does. Both are then scored on the whole
validation split. ms/iteration is wall time per training iteration including batch loading, logging and the
optimizer, excluding validation, checkpointing and the first ``bench.warmup`` iterations. The ratio ours / plain
is printed of the runs' median iteration times (the loop's steady cost: robust to a garbage collection or a
neighbour's burst on a shared machine) and of their means (everything, stalls included). With ``bench.rounds``
above 1 the two loops alternate that many times and each ratio printed is the median of the rounds' ratios.
"""

from __future__ import annotations

import copy
import statistics
import time

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from ssl_lightning.config import config_dir
from ssl_lightning.losses import lm_loss
from ssl_lightning.optim import param_groups
from ssl_lightning.train import fill_from_data, train

NANOGPT_README_VAL_LOSS = 1.88


class IterationTimer(Callback):
    """Wall time between the ends of consecutive training iterations, skipping intervals that contain a
    validation (and the checkpoint written after it). The last instance is :attr:`IterationTimer.last`."""

    last: IterationTimer | None = None

    def __init__(self, warmup: int = 10):
        self.warmup, self.times, self._prev, self._dirty = warmup, [], None, False
        IterationTimer.last = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._prev is not None and not self._dirty and trainer.global_step > self.warmup:
            self.times.append(now - self._prev)
        self._prev, self._dirty = now, False

    def on_validation_start(self, trainer, pl_module) -> None:
        self._dirty = True


def plain_loop(cfg: DictConfig, warmup: int) -> tuple[float, list[float]]:
    """The same model, data, optimizer, schedule and clipping in a hand-written loop; returns (val loss, times)."""
    datamodule = instantiate(cfg.data)
    L.seed_everything(cfg.seed, verbose=False)  # train() seeds, then builds the model first: same weights
    fill_from_data(cfg, datamodule)
    method = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    backbone, wte = method.backbone, method.backbone.token_embed.weight
    factory = method.optimizer_factory
    optimizer = factory(param_groups(method, factory.keywords.get("weight_decay", 0.0)), lr=factory.keywords["lr"])
    steps = cfg.trainer.max_steps
    scheduler = method.scheduler_factory(optimizer, total_steps=steps, steps_per_epoch=steps)
    data, block, batch = datamodule.tokens("train").long(), datamodule.block_size, datamodule.batch_size
    g = torch.Generator().manual_seed(cfg.seed)

    def get_batch():  # nanoGPT's
        ix = torch.randint(len(data) - block, (batch,), generator=g)
        return torch.stack([data[i : i + block] for i in ix]), torch.stack([data[i + 1 : i + 1 + block] for i in ix])

    backbone.train()
    times, prev = [], time.perf_counter()
    for it in range(steps):
        x, y = get_batch()
        loss = F.cross_entropy(F.linear(backbone(x, is_causal=True), wte).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), method.grad_clip)
        optimizer.step()
        scheduler.step()
        now = time.perf_counter()
        if it >= warmup:
            times.append(now - prev)
        prev = now

    backbone.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in _val_batches(datamodule, method):
            keep = targets != -100
            total += lm_loss(method.head(backbone(inputs, is_causal=True)[keep]), targets[keep]).item() * keep.sum().item()
            count += keep.sum().item()
    return total / count, times


def _val_batches(datamodule, method):
    datamodule.collate_fn = method.collator
    return datamodule.val_dataloader()


def mean(times: list[float]) -> float:
    return sum(times) / len(times)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="bench_text")
def main(cfg: DictConfig) -> None:
    warmup, rounds = cfg.bench.warmup, cfg.bench.rounds
    results = []  # (ours loss, ours times, plain loss, plain times) per round
    for r in range(rounds):  # interleaved, so drift on a shared machine hits both loops alike
        ours_cfg = copy.deepcopy(cfg)
        OmegaConf.set_struct(ours_cfg, False)
        ours_cfg.callbacks.bench_timer = {"_target_": "ssl_lightning.bench.text.IterationTimer", "warmup": warmup}
        if rounds > 1:
            ours_cfg.paths.output_dir = f"{cfg.paths.output_dir}/round{r}"
        if r % 2:  # each loop goes first in turn, so neither always runs second in a round
            plain_loss, plain_times = plain_loop(copy.deepcopy(cfg), warmup)
            metrics = train(ours_cfg)
        else:
            metrics = train(ours_cfg)
            plain_loss, plain_times = plain_loop(copy.deepcopy(cfg), warmup)
        results.append((metrics["val/loss"], IterationTimer.last.times, plain_loss, plain_times))

    def ms(times: list[float]) -> str:
        return f"{1e3 * mean(times):>9.2f} {1e3 * statistics.median(times):>9.2f}"

    print(f"\nCLM on {cfg.data.path}: {cfg.trainer.max_steps} iterations, block {cfg.data.block_size}, batch "
          f"{cfg.data.batch_size}, {cfg.backbone.depth} layers x {cfg.backbone.embed_dim}; torch threads "
          f"{torch.get_num_threads()}; {rounds} interleaved round(s)")
    print(f"{'':<22} {'val/loss':>9} {'ms/it':>9} {'median':>9}")
    for r, (ours_loss, ours_times, plain_loss, plain_times) in enumerate(results):
        tag = f" (round {r})" if rounds > 1 else ""
        print(f"{'ours (Lightning)' + tag:<22} {ours_loss:>9.4f} {ms(ours_times)}")
        print(f"{'plain PyTorch loop' + tag:<22} {plain_loss:>9.4f} {ms(plain_times)}")
    print(f"{'nanoGPT README':<22} {NANOGPT_README_VAL_LOSS:>9.2f}")
    for name, stat in (("median", statistics.median), ("mean", mean)):
        ratios = [stat(ours) / stat(plain) for _, ours, _, plain in results]
        print(f"time per iteration ({name} of each run), ours / plain: {statistics.median(ratios):.3f}"
              + (f" (median of {rounds} rounds: {', '.join(f'{x:.3f}' for x in ratios)})" if rounds > 1 else ""))

