"""One image to every logger that takes images: TensorBoard (``add_image``), W&B (``wandb.Image``) and MLflow
(a PNG artifact ``images/KEY/step_STEP.png``)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

IMAGE_LOGGERS = (TensorBoardLogger, WandbLogger, MLFlowLogger)


def image_loggers(trainer: L.Trainer) -> list[Logger]:
    return [lg for lg in trainer.loggers if isinstance(lg, IMAGE_LOGGERS)]


def log_image(logger: Logger, key: str, image: torch.Tensor, step: int) -> None:
    """``image``: (3, H, W) in [0, 1], on the CPU (rank 0 only, outside the training step)."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image, global_step=step)
        return
    hwc = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    if isinstance(logger, WandbLogger):
        logger.log_image(key=key, images=[hwc], step=step)
    elif isinstance(logger, MLFlowLogger):
        logger.experiment.log_image(logger.run_id, hwc, artifact_file=f"images/{key}/step_{step:07d}.png")
