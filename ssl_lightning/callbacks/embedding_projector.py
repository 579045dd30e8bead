"""At the end of pretraining, the validation embeddings in TensorBoard's embedding projector."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, Subset

from ssl_lightning.data import ImageDataModule, TransformedDataset
from ssl_lightning.transforms import eval_transform


class EmbeddingProjector(Callback):
    """When training ends, writes the backbone features (``pl_module(x)``, eval mode) of up to ``num_points``
    validation images to TensorBoard's projector (tag ``val/embeddings``), with their labels (class names
    where the dataset has them) and, with ``thumbnails``, the images themselves as sprites.

    The images are a fixed, seeded sample of the validation split (every image when it is smaller), encoded
    on rank 0 only: no collective operation, so other ranks never wait for it. Does nothing without a
    TensorBoard logger or for non-image data.

    Args:
        num_points: at most this many images (TensorBoard's projector stays responsive up to a few thousand).
        thumbnails: attach the (un-normalised) images, resized to at most ``thumbnail_size`` pixels.
        thumbnail_size: side of a sprite thumbnail.
    """

    def __init__(self, num_points: int = 1000, thumbnails: bool = True, thumbnail_size: int = 32):
        if num_points < 1 or thumbnail_size < 1:
            raise ValueError(f"EmbeddingProjector needs num_points >= 1 and thumbnail_size >= 1, got {num_points}, {thumbnail_size}")
        self.num_points, self.thumbnails, self.thumbnail_size = num_points, thumbnails, thumbnail_size

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        dm = trainer.datamodule
        if not trainer.is_global_zero or not loggers or not isinstance(dm, ImageDataModule):
            return
        val = dm.split("val")
        g = torch.Generator().manual_seed(dm.seed)
        indices = torch.randperm(len(val), generator=g)[: self.num_points].sort().values.tolist()
        dataset = TransformedDataset(Subset(val, indices), eval_transform(dm.image_size, dm.mean, dm.std))
        was_training = pl_module.training
        pl_module.eval()
        feats, labels, images = [], [], []
        for x, y in DataLoader(dataset, batch_size=dm.eval_batch_size, num_workers=0):
            feats.append(pl_module(x.to(pl_module.device)).float().cpu())
            labels += y.tolist()
            if self.thumbnails:
                images.append(self._thumbnails(x, dm.mean, dm.std))
        pl_module.train(was_training)
        classes = getattr(val, "classes", None)
        metadata = [classes[y] if classes is not None and 0 <= y < len(classes) else str(y) for y in labels]
        for logger in loggers:
            logger.experiment.add_embedding(
                torch.cat(feats), metadata=metadata, label_img=torch.cat(images) if images else None,
                global_step=trainer.global_step, tag="val/embeddings",
            )
            logger.experiment.flush()

    def _thumbnails(self, x: torch.Tensor, mean, std) -> torch.Tensor:
        x = x.float() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
        if x.shape[-1] > self.thumbnail_size:
            x = F.interpolate(x, size=(self.thumbnail_size, self.thumbnail_size), mode="bilinear", antialias=True)
        return x.clamp(0, 1)
