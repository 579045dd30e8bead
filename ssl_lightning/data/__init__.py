"""Datamodules for images (multi-view batches) and the sampler that makes them reproducible."""

from ssl_lightning.data.datamodule import (
    DigitsDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    TorchvisionDataModule,
    TransformedDataset,
)
from ssl_lightning.data.sampler import ShardedSampler

__all__ = [
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ShardedSampler",
    "SyntheticDataModule",
    "TorchvisionDataModule",
    "TransformedDataset",
]
