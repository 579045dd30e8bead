"""A TensorBoard grid of MAE reconstructions of validation images, each validation epoch."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchvision.utils import make_grid

from ssl_lightning.backbones.vit import patchify, unpatchify
from ssl_lightning.callbacks.images import image_loggers, log_image
from ssl_lightning.transforms.masking import random_masking


class ReconstructionGrid(Callback):
    """Logs ``val/reconstruction`` at the end of every validation epoch: three rows of the first
    ``num_images`` validation images, (1) the original, (2) the masked input (removed patches grey), (3) the
    reconstruction: predicted pixels on the masked patches, the visible patches pasted in (He et al., 2022,
    Fig. 2). The masks are drawn once from ``seed`` (the method's mask ratio), so epochs are comparable.

    With ``norm_pix_loss`` the decoder predicts per-patch normalised pixels; they are shown with the mean
    and variance of the original patch, as the MAE reference visualisation does.

    The module must provide ``reconstruct(images, mask) -> (B, N, P)`` pixel predictions, ``num_masked``
    and a ViT ``backbone``.
    """

    def __init__(self, num_images: int = 8, seed: int = 0):
        self.num_images, self.seed = num_images, seed
        self._images: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero:
            self._images = batch[0][: self.num_images].detach()

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = image_loggers(trainer)
        if trainer.sanity_checking or not trainer.is_global_zero or not loggers or self._images is None:
            return
        images = self._images.to(pl_module.device)
        grid = self.grid(pl_module, images, trainer.datamodule.mean, trainer.datamodule.std)
        for logger in loggers:
            log_image(logger, "val/reconstruction", grid, trainer.global_step)

    def grid(self, pl_module: L.LightningModule, images: torch.Tensor, mean, std) -> torch.Tensor:
        """(3, H', W') image grid in [0, 1]: originals, masked inputs, reconstructions."""
        p, n = pl_module.backbone.patch_size, pl_module.backbone.num_patches
        g = torch.Generator().manual_seed(self.seed)
        mask = random_masking(images.shape[0], n, pl_module.num_masked, generator=g)[2].to(images.device)  # (B, N)
        was_training = pl_module.training
        pl_module.eval()
        pred = pl_module.reconstruct(images, mask).float()  # (B, N, P)
        pl_module.train(was_training)
        mean_t = torch.as_tensor(list(mean), device=images.device).view(1, 3, 1, 1)
        std_t = torch.as_tensor(list(std), device=images.device).view(1, 3, 1, 1)
        original = images.float() * std_t + mean_t
        patches = patchify(original, p)  # (B, N, P) pixels
        pred_pixels = patchify(unpatchify(pred, p, images.shape[-2]) * std_t + mean_t, p)
        m = mask[..., None]
        masked = unpatchify(torch.where(m, torch.full_like(patches, 0.5), patches), p, images.shape[-2])
        recon = unpatchify(torch.where(m, pred_pixels, patches), p, images.shape[-2])
        rows = torch.cat([original, masked, recon]).clamp(0, 1).cpu()
        return make_grid(rows, nrow=images.shape[0], padding=1)
