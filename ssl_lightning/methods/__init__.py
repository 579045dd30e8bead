"""Methods: one LightningModule per paper, each small."""

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.jigsaw import Jigsaw
from ssl_lightning.methods.rotation import RotNet
from ssl_lightning.methods.simclr import SimCLR

__all__ = ["BYOL", "Jigsaw", "RotNet", "SSLMethod", "SimCLR"]
