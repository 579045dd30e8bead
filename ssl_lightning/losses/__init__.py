"""Pure loss functions: tensors in, scalar out. No state, no torch.distributed, no Lightning."""

from ssl_lightning.losses.beit import beit_loss
from ssl_lightning.losses.byol import byol_loss
from ssl_lightning.losses.mae import mae_loss
from ssl_lightning.losses.nt_xent import nt_xent_loss

__all__ = ["beit_loss", "byol_loss", "mae_loss", "nt_xent_loss"]
