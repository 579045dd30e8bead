"""Methods: one LightningModule per paper, each small."""

from ssl_lightning.methods.barlow_twins import BarlowTwins
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.methods.beit import BEiT
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.clm import CLM
from ssl_lightning.methods.dino import DINO
from ssl_lightning.methods.ibot import IBOT
from ssl_lightning.methods.ijepa import IJEPA
from ssl_lightning.methods.jigsaw import Jigsaw
from ssl_lightning.methods.mae import MAE
from ssl_lightning.methods.mlm import MLM
from ssl_lightning.methods.moco import MoCo
from ssl_lightning.methods.mocov3 import MoCoV3
from ssl_lightning.methods.rotation import RotNet
from ssl_lightning.methods.simclr import SimCLR
from ssl_lightning.methods.simsiam import SimSiam
from ssl_lightning.methods.swav import SwAV
from ssl_lightning.methods.vicreg import VICReg

__all__ = [
    "BEiT",
    "BYOL",
    "BarlowTwins",
    "CLM",
    "DINO",
    "IBOT",
    "IJEPA",
    "Jigsaw",
    "MAE",
    "MLM",
    "MoCo",
    "MoCoV3",
    "RotNet",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SwAV",
    "VICReg",
]
