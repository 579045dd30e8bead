"""The small base every method shares: backbone, optimizer and LR schedule, and the evaluation forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_lightning.callbacks.steps import host_scalar, log_step, step_logged
from ssl_lightning.config import check
from ssl_lightning.distributed import world_size
from ssl_lightning.nn import SyncBatchNorm, convert_sync_batchnorm
from ssl_lightning.optim import LR_SCALING, param_groups, scaled_lr

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def compile_backends() -> list[str]:
    """The backend names ``torch.compile`` accepts here (``method.compile=<name>``)."""
    return torch._dynamo.list_backends(exclude_tags=())


class SSLMethod(L.LightningModule):
    """Base of every method.

    Subclasses build their heads in ``__init__`` and implement ``training_step`` returning
    ``{"loss": loss, "h": backbone features of the first view (detached), ...}`` so that online evaluation
    callbacks can use the features without a second forward.

    Args:
        backbone: maps images to (B, backbone.num_features).
        optimizer: partial optimizer, called as ``optimizer(param_groups, lr=lr)``; its ``lr`` is the base LR.
        scheduler: partial scheduler, called as ``scheduler(optimizer, total_steps=..., steps_per_epoch=...)``.
        lr_scaling: how the LR follows the total batch B (per-device batch x devices x nodes x
            gradient-accumulation steps): ``"linear"``, LR = lr x B / 256 (Goyal et al., 2017; SimCLR, BYOL,
            SimSiam, MoCo v3); ``"sqrt"``, LR = lr x sqrt(B) (SimCLR, Appendix B.1, better for small batches
            and short schedules); ``"none"``, LR = lr.
        compile: ``torch.compile`` every network the training step runs, in place, when training starts (see
            :meth:`compile_targets`; parameter names and checkpoints are unchanged): ``true`` (inductor),
            ``false``, or a dynamo backend name (``aot_eager``, ``eager``: debugging) or callable.
        sync_batchnorm: with more than one rank, replace every BatchNorm of the module (backbone, heads,
            teachers) by :class:`~ssl_lightning.nn.SyncBatchNorm`, so batch statistics are those of the
            global batch (the paper's choice is in each ``conf/method/*.yaml``). Works on CPU (gloo) and GPUs.
    """

    #: smallest per-device batch the method can train on (BatchNorm statistics, negatives)
    min_batch_size: int = 2

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        lr_scaling: str = "linear",
        compile: bool = False,
        sync_batchnorm: bool = False,
    ):
        super().__init__()
        check(hasattr(backbone, "num_features"), "backbone", type(backbone).__name__, "a module exposing num_features")
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        check(lr_scaling in LR_SCALING, "method.lr_scaling", lr_scaling, f"one of {', '.join(LR_SCALING)}")
        base_lr = getattr(optimizer, "keywords", {}).get("lr")
        check(isinstance(base_lr, (int, float)) and base_lr > 0, "method.optimizer.lr", base_lr, "a base LR > 0")
        sched = getattr(scheduler, "keywords", {})
        if "warmup_epochs" in sched:
            check(sched["warmup_epochs"] >= 0, "method.scheduler.warmup_epochs", sched["warmup_epochs"], "a number of epochs >= 0")
        if "final_lr_ratio" in sched:
            check(0 <= sched["final_lr_ratio"] <= 1, "method.scheduler.final_lr_ratio", sched["final_lr_ratio"], "a fraction in [0, 1]")
        self.lr_scaling = lr_scaling
        if not (isinstance(compile, bool) or callable(compile)):  # a backend name (imports dynamo: only then)
            check(compile in compile_backends(), "method.compile", compile,
                  "true, false or a torch.compile backend name (inductor, aot_eager, eager, ...: "
                  "torch._dynamo.list_backends(exclude_tags=()))")
        self.compile_backend, self._compiled = compile, False
        check(isinstance(sync_batchnorm, bool), "method.sync_batchnorm", sync_batchnorm, "true or false")
        self.sync_batchnorm = sync_batchnorm
        self.run_config: dict[str, Any] | None = None  # the resolved Hydra config, stored in checkpoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, num_features): what evaluation, kNN and linear probes use."""
        return self.backbone(x)

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"h": self(x), "y": y}

    # -- model surgery before training: SyncBN, DDP buffers, compilation --------------------------------

    def compile_targets(self) -> list[nn.Module]:
        """What ``compile`` compiles: every network of the method, i.e. each child module with parameters
        (backbone, projector, predictor, prototypes, heads, MAE's decoder, and the momentum teachers), not
        metrics. Each is compiled on its own (``module.compile()``; a ViT compiles ``forward_tokens``, the
        token path MAE and BEiT call directly), so a teacher, a no-grad or an eval-mode call gets its own
        graph once instead of recompiling the student's: after the first training step and the first
        validation, nothing compiles again (tests/test_compile.py counts the graphs)."""
        from torchmetrics import Metric

        return [m for m in self.children() if not isinstance(m, Metric) and any(True for _ in m.parameters())]

    def configure_model(self) -> None:
        """Model surgery Lightning allows once the module is on its device, before DDP wrapping and before the
        optimizer is built (the process group exists by then).

        1. SyncBatchNorm everywhere when ``sync_batchnorm`` and more than one rank. The conversion keeps the
           parameter objects, so parameter groups, LARS exclusions and EMA pairs are unchanged, and it converts
           the teachers too (they are submodules).
        2. Tell DDP which buffers not to broadcast (:meth:`replicated_buffers`).
        3. Then ``compile``: the compiled graphs must see the final (synchronised) BatchNorm layers.
        """
        if self.sync_batchnorm and world_size() > 1:
            convert_sync_batchnorm(self)
        self._ddp_params_and_buffers_to_ignore = self.replicated_buffers()
        if self.compile_backend is not False and not self._compiled:
            options = {} if self.compile_backend is True else {"backend": self.compile_backend}
            for module in self.compile_targets():
                module.compile(**options)
            self._compiled = True

    def replicated_buffers(self) -> list[str]:
        """The buffers DDP need not broadcast: all but the running statistics of BatchNorm layers that are
        not synchronised.

        DDP (``broadcast_buffers``, on by default) copies every buffer from rank 0 to the others before
        each forward. That is what keeps per-device BatchNorm statistics (Shuffle-BN, jigsaw, rotation)
        the same on every rank, so those still go. Every other buffer is the same on every rank by
        construction: queues are written with keys gathered from all ranks (MoCo's 32 MB at K = 65536 would
        be re-sent every step), SyncBatchNorm statistics are those of the global batch, position embeddings
        and permutation sets are constants, a tokenizer's codebook is broadcast once when it is fitted.
        Lightning wraps the LightningModule itself in DDP, which skips the names listed in the module's
        ``_ddp_params_and_buffers_to_ignore`` (set by :meth:`configure_model`); with nothing left to
        broadcast, DDP issues no broadcast at all. Statistics of one rank's data must not be buffers
        (BEiT's code histogram is a plain tensor, summed over ranks when logged).
        """
        per_rank = set()
        for prefix, module in self.named_modules():
            if isinstance(module, _BatchNorm) and not isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
                per_rank.update(f"{prefix}.{name}" if prefix else name for name, _ in module.named_buffers(recurse=False))
        return [name for name, _ in self.named_buffers() if name not in per_rank]

    # -- optimisation -----------------------------------------------------------------------------------

    def total_batch_size(self) -> int:
        trainer = self.trainer
        return self.trainer.datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def learning_rate(self, base_lr: float) -> float:
        return scaled_lr(base_lr, self.total_batch_size(), self.lr_scaling)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Override to give heads their own groups (e.g. SimSiam's fixed-LR predictor)."""
        return param_groups(self, weight_decay)

    def configure_optimizers(self):
        base_lr = self.optimizer_factory.keywords["lr"]
        weight_decay = self.optimizer_factory.keywords.get("weight_decay", 0.0)
        lr = self.learning_rate(base_lr)
        optimizer = self.optimizer_factory([g for g in self.parameter_groups(weight_decay) if g["params"]], lr=lr)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, self.trainer.num_training_batches // self.trainer.accumulate_grad_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total, steps_per_epoch=per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def logs_this_step(self, prog_bar: bool = False) -> bool:
        """Whether a per-step value logged now is read (a logger writes, the epoch ends, or for ``prog_bar`` the
        bar refreshes: :func:`~ssl_lightning.callbacks.steps.step_logged`); False outside a Trainer."""
        return self._trainer is not None and step_logged(self._trainer, prog_bar)

    def log_step(self, name: str, value, prog_bar: bool = False) -> None:
        """Log a per-step training value on the steps where something reads it (:meth:`logs_this_step`); each
        skipped ``self.log`` saves about 0.2 ms of host time."""
        if self._trainer is not None:
            log_step(self._trainer, self, name, value, prog_bar)

    def log_lr(self) -> None:
        """Log the LR (a host number, see :func:`host_scalar`) on the steps a logger writes."""
        if self.logs_this_step():
            lr = host_scalar(self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log("train/lr", lr, on_step=True, on_epoch=False)

    # -- checkpoints ------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the resolved run config (plain containers, safe under ``torch.load(weights_only=True)``)."""
        checkpoint["ssl_lightning"] = {"config": self.run_config, "method": type(self).__name__}
