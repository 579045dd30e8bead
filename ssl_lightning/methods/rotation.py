"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations (Gidaris et al., 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssl_lightning.config import check
from ssl_lightning.heads import MLP
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.transforms.rotation import NUM_ROTATIONS, rotate_batch


class RotNet(SSLMethod):
    """Predict by how much an image was rotated: 4-way classification of 0, 90, 180 and 270 degrees.

    Every image of the batch is fed in all four rotations at once (Sec. 3.1.3: better than one random
    rotation per image), so a batch of B images is a balanced batch of 4B pretext examples; the rotation
    happens here on the batch tensor (``torch.rot90``, exact), after a light crop + flip augmentation.
    The paper puts its classifier on later convolutional blocks; here it is a linear layer (or, with
    ``hidden_dim``, an MLP with one hidden layer) on the backbone's pooled features, so ``pl_module(x)``
    stays the plain backbone for kNN and linear evaluation.

    Paper defaults (CIFAR-10, Sec. 4.1; the authors' code): SGD with Nesterov momentum 0.9, weight decay
    5e-4, LR 0.1 at batch 128 (0.2 per 256 images), 100 epochs with the LR divided by 5 after epochs 30, 60
    and 80. Logs ``train/pretext_acc`` and ``val/pretext_acc`` (percent, chance = 25).

    Args:
        hidden_dim: ``None`` for a linear head, else the width of one hidden layer (BN, ReLU).
    """

    num_views = 1
    min_batch_size = 1  # the step sees 4B images

    def __init__(self, backbone, optimizer, scheduler=None, hidden_dim: int | None = None, lr_scaling: str = "linear",
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(hidden_dim is None or (isinstance(hidden_dim, int) and hidden_dim > 0), "method.hidden_dim", hidden_dim,
              "null (a linear head) or a width > 0")
        widths = [backbone.num_features] + ([hidden_dim] if hidden_dim else []) + [NUM_ROTATIONS]
        self.head = MLP(widths)

    def pretext(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) images -> loss, accuracy (percent), features (4B, F) with the unrotated batch first."""
        rotated, labels = rotate_batch(x)  # (4B, 3, S, S), (4B,)
        h = self.backbone(rotated)  # (4B, F)
        logits = self.head(h)  # (4B, 4)
        loss = F.cross_entropy(logits.float(), labels)
        acc = 100.0 * (logits.argmax(dim=1) == labels).float().mean()
        return loss, acc, h, labels

    def training_step(self, batch, batch_idx: int):
        (x,), _ = batch
        loss, acc, h, _ = self.pretext(x)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_step("train/pretext_acc", acc)
        self.log_lr()
        return {"loss": loss, "h": h[: x.shape[0]].detach()}

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Rotation accuracy on the clean validation images; ``h`` of the unrotated ones for the linear probe."""
        x, y = batch
        loss, acc, h, labels = self.pretext(x)
        self.log("val/pretext_acc", acc, on_epoch=True, sync_dist=True, batch_size=labels.numel())
        self.log("val/pretext_loss", loss, on_epoch=True, sync_dist=True, batch_size=labels.numel())
        return {"h": h[: x.shape[0]], "y": y}
