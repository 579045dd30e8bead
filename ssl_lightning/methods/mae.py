"""MAE: Masked Autoencoders Are Scalable Vision Learners (He et al., 2022)."""

from __future__ import annotations

import torch

from ssl_lightning.backbones import has_token_interface, token_interface_help
from ssl_lightning.backbones.vit import patchify
from ssl_lightning.callbacks.reconstruction_grid import ReconstructionGrid
from ssl_lightning.config import check
from ssl_lightning.heads import MAEDecoder
from ssl_lightning.losses import mae_loss
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.transforms.masking import RandomMasking, mask_to_ids, random_masking


class MAE(SSLMethod):
    """An asymmetric autoencoder: the ViT encoder sees only the visible patches (a random 25%), a
    lightweight decoder sees the encoded patches plus mask tokens and predicts the pixels of every patch;
    the loss is the MSE on the masked patches only (Sec. 3). The encoder's cost scales with 1 - mask_ratio.

    Paper defaults (ViT-B/L/H, ImageNet): mask ratio 0.75, decoder 8 blocks x 512 wide, normalised-pixel
    targets, AdamW (betas 0.9, 0.95), weight decay 0.05, base LR 1.5e-4 x B/256, 40 warmup epochs then
    cosine, augmentation random resized crop (0.2-1) + flip only (Appendix A.1, Table 8).

    Batches come from :class:`~ssl_lightning.transforms.MaskedImageTransform` with
    :class:`~ssl_lightning.transforms.RandomMasking`: ``((images (B, 3, H, W), masks (B, N)), labels)``.
    ``training_step`` returns as ``h`` (and ``z``) the pooled features of the visible-patch encoding, which
    is free; validation gives the probe the same kind of features (of masked validation images), while the
    online kNN encodes clean, un-masked images (``forward``).

    Args:
        mask_ratio: fraction of patches removed, in (0, 1); exactly round(N x ratio) per image.
        decoder_dim, decoder_depth, decoder_num_heads: decoder transformer sizes.
        norm_pix_loss: regress per-patch normalised pixels (mean 0, variance 1 within each patch).
        grid_images: images in the ``val/reconstruction`` grid (0: no grid).
    """

    num_views = 1
    min_batch_size = 1

    def __init__(self, backbone, optimizer, scheduler=None, mask_ratio: float = 0.75, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_num_heads: int = 16, norm_pix_loss: bool = True, grid_images: int = 8,
                 lr_scaling: str = "linear", compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(has_token_interface(backbone), "backbone", type(backbone).__name__,
              f"{token_interface_help(backbone)}: MAE encodes image patches")
        masking = RandomMasking(mask_ratio)
        masking.validate(backbone.grid_size, backbone.grid_size)
        check(decoder_depth >= 1 and decoder_dim % decoder_num_heads == 0 and decoder_dim % 4 == 0, "method.decoder_dim",
              decoder_dim, f"a width divisible by 4 and by decoder_num_heads={decoder_num_heads}, with decoder_depth >= 1")
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), norm_pix_loss
        self.num_masked = masking.num_masked(backbone.num_patches)
        self.decoder = MAEDecoder(backbone.grid_size, backbone.embed_dim, 3 * backbone.patch_size**2, decoder_dim,
                                  decoder_depth, decoder_num_heads)
        self.reconstruction_grid = ReconstructionGrid(grid_images) if grid_images > 0 else None

    def configure_callbacks(self):
        return [self.reconstruction_grid] if self.reconstruction_grid is not None else []

    def forward_mae(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches, decode all. Returns the loss, the encoder output (B, 1 + N - M, D) and
        the predictions (B, N, P)."""
        ids_keep, ids_restore = mask_to_ids(mask, self.num_masked)  # (B, N - M), (B, N)
        latent = self.backbone.forward_tokens(images, ids_keep)  # (B, 1 + N - M, D)
        pred = self.decoder(latent, ids_restore)  # (B, N, P)
        loss = mae_loss(pred, patchify(images, self.backbone.patch_size), mask, self.norm_pix_loss)
        return loss, latent, pred

    def training_step(self, batch, batch_idx: int):
        (images, mask), _ = batch
        loss, latent, _ = self.forward_mae(images, mask)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_lr()
        h = self.backbone.pool(latent).detach()
        return {"loss": loss, "h": h, "z": h}

    def validation_step(self, batch, batch_idx: int):
        """``val/loss`` on validation images masked from seed ``batch_idx`` (the same masks every epoch), and
        the pooled visible-patch features as ``h``: the online linear probe is trained on the training
        step's visible-patch features, so it is evaluated on the same kind (kNN uses clean images)."""
        x, y = batch
        g = torch.Generator().manual_seed(batch_idx)
        mask = random_masking(x.shape[0], self.backbone.num_patches, self.num_masked, generator=g)[2].to(x.device)
        loss, latent, _ = self.forward_mae(x, mask)
        self.log("val/loss", loss, sync_dist=True)
        return {"h": self.backbone.pool(latent), "y": y}

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted patches (B, N, P) in the data-normalised pixel space (per-patch statistics of the
        original image put back when the targets are normalised pixels)."""
        _, _, pred = self.forward_mae(images, mask)
        if self.norm_pix_loss:
            target = patchify(images, self.backbone.patch_size).float()
            pred = pred.float() * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(dim=-1, keepdim=True)
        return pred
