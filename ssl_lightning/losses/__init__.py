"""Pure loss functions: tensors in, scalar out. No state, no torch.distributed, no Lightning."""

from ssl_lightning.losses.barlow_twins import barlow_twins_loss
from ssl_lightning.losses.beit import beit_loss
from ssl_lightning.losses.byol import byol_loss
from ssl_lightning.losses.dino import dino_loss, entropy, teacher_probs
from ssl_lightning.losses.ibot import ibot_patch_loss
from ssl_lightning.losses.ijepa import block_targets, ijepa_loss
from ssl_lightning.losses.lm import lm_loss
from ssl_lightning.losses.mae import mae_loss
from ssl_lightning.losses.moco import moco_loss, moco_v3_loss
from ssl_lightning.losses.nt_xent import nt_xent_loss
from ssl_lightning.losses.simsiam import simsiam_loss
from ssl_lightning.losses.swav import sinkhorn_knopp, swav_loss
from ssl_lightning.losses.vicreg import vicreg_loss

__all__ = [
    "barlow_twins_loss",
    "beit_loss",
    "block_targets",
    "byol_loss",
    "dino_loss",
    "entropy",
    "ibot_patch_loss",
    "ijepa_loss",
    "lm_loss",
    "mae_loss",
    "moco_loss",
    "moco_v3_loss",
    "nt_xent_loss",
    "simsiam_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "teacher_probs",
    "vicreg_loss",
]
