"""Evaluation protocols of a pretrained backbone, one per ``conf/protocol/<name>.yaml``."""

from ssl_lightning.protocols.base import Protocol
from ssl_lightning.protocols.finetune import FineTune
from ssl_lightning.protocols.knn import KNN
from ssl_lightning.protocols.linear import LinearProbe

__all__ = ["KNN", "FineTune", "LinearProbe", "Protocol"]
