"""Pure loss functions: tensors in, scalar out. No state, no torch.distributed, no Lightning."""

from ssl_lightning.losses.byol import byol_loss
from ssl_lightning.losses.lm import lm_loss
from ssl_lightning.losses.nt_xent import nt_xent_loss

__all__ = ["byol_loss", "lm_loss", "nt_xent_loss"]
