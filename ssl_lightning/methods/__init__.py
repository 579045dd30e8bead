"""Methods: one LightningModule per paper, each small."""

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.clm import CLM
from ssl_lightning.methods.mlm import MLM
from ssl_lightning.methods.simclr import SimCLR

__all__ = ["BYOL", "CLM", "MLM", "SSLMethod", "SimCLR"]
