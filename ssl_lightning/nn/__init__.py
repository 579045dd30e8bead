"""Layers that are not heads or backbones (synchronised and split BatchNorm)."""

from ssl_lightning.nn.split_batchnorm import SplitBatchNorm2d, convert_split_batchnorm, split_forward
from ssl_lightning.nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["SplitBatchNorm2d", "SyncBatchNorm", "convert_split_batchnorm", "convert_sync_batchnorm", "split_forward"]
