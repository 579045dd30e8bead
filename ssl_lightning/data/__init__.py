"""Datamodules for images (multi-view batches) and text (packed, masked or shifted token blocks), and the
sampler that makes them reproducible."""

from ssl_lightning.data.datamodule import (
    DigitsDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    TorchvisionDataModule,
    TransformedDataset,
)
from ssl_lightning.data.sampler import ShardedSampler
from ssl_lightning.data.text import CausalLMCollator, MLMCollator, TextDataModule, TokenWindows

__all__ = [
    "DigitsDataModule",
    "ImageDataModule",
    "CausalLMCollator",
    "ImageFolderDataModule",
    "MLMCollator",
    "ShardedSampler",
    "SyntheticDataModule",
    "TextDataModule",
    "TokenWindows",
    "TorchvisionDataModule",
    "TransformedDataset",
]
