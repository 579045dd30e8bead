"""Layers that are not heads or backbones (synchronised BatchNorm)."""

from ssl_lightning.nn.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]
