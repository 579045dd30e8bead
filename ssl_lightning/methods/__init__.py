"""Methods: one LightningModule per paper, each small."""

from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.beit import BEiT
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.mae import MAE
from ssl_lightning.methods.simclr import SimCLR

__all__ = ["BEiT", "BYOL", "MAE", "SSLMethod", "SimCLR"]
