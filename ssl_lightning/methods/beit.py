"""BEiT: BERT Pre-Training of Image Transformers (Bao et al., 2022)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ssl_lightning.backbones import has_token_interface, token_interface_help
from ssl_lightning.backbones.vit import beit_trunc_normal_
from ssl_lightning.config import check
from ssl_lightning.data.datamodule import TransformedDataset
from ssl_lightning.distributed import world_size
from ssl_lightning.losses import beit_loss
from ssl_lightning.methods.base import SSLMethod
from ssl_lightning.tokenizers import PatchKMeansTokenizer, codebook_stats, fit_kmeans_tokenizer, load_tokenizer, save_tokenizer
from ssl_lightning.transforms.masking import BlockwiseMasking, check_mask_ratio


class BEiT(SSLMethod):
    """Masked image modelling on visual tokens: the image is tokenised (no gradients), ~40% of its patches
    are masked blockwise and their embeddings replaced by a learned mask token, the ViT encodes the whole
    corrupted sequence, and a linear head predicts the visual token of each masked patch; cross-entropy on
    the masked positions only (Sec. 2.2-2.3, Eq. 1).

    Paper defaults (ViT-B/16, ImageNet): DALL-E dVAE tokens (8192), blockwise masking of 75 of 196 patches,
    AdamW (betas 0.9, 0.999), LR 1.5e-3 at batch 2048 (1.875e-4 x B/256), weight decay 0.05, 10 warmup
    epochs then cosine to 1e-5 (``--min_lr``), gradient clipping 3.0, stochastic depth 0.1 (Sec. 2.5,
    Appendix; microsoft/unilm ``beit/README.md`` pretraining command). The official init
    (``modeling_pretrain.py``: truncated-normal 0.02 cut at +-0.02, output projections divided by
    sqrt(2 x layer id)) is the ViT's ``init=beit``, selected with drop path 0.1 by ``conf/recipe/beit.yaml``;
    the mask token and the head are truncated-normal 0.02 likewise.

    Remaining deviations, with reasons: no layer scale (``--layer_scale_init_value 0.1``) and no shared
    relative position bias (the paper's ViT variant; our ViT is the plain one every method shares, with
    fixed sin-cos positions); a k-means tokenizer instead of DALL-E's dVAE (its weights cannot be
    downloaded here); warmup in epochs (the command's 10,000 steps are 16 epochs at batch 2048).

    The tokenizer: ``tokenizer_path`` names a tokenizer file (see :mod:`ssl_lightning.tokenizers.files`);
    with ``None``, a k-means codebook of ``vocab_size`` codes is fitted on patches of augmented training
    images when training starts (on the device; saved as ``<run dir>/tokenizer.pt`` and in checkpoints, so
    a resumed run keeps it). Logs ``train/codebook_usage`` (fraction of codes among the epoch's targets)
    and ``train/codebook_perplexity`` each epoch, and ``train/token_acc`` each step.

    Batches: ``((images (B, 3, H, W), masks (B, N)), labels)`` from
    :class:`~ssl_lightning.transforms.MaskedImageTransform` with
    :class:`~ssl_lightning.transforms.BlockwiseMasking`. ``h`` is the pooled encoding of the masked input
    (in training and, with fixed masks, in validation, so the online probe sees one kind of feature).

    Args:
        mask_ratio: target fraction of masked patches (0.4).
        vocab_size: number of visual tokens; must match a given tokenizer file.
        tokenizer_path: tokenizer file, or ``None`` to fit one at the start of the run.
        tokenizer_fit_images, tokenizer_fit_patches, tokenizer_fit_iters: k-means fit budget.
        clip_grad: gradient-norm clipping (unless ``trainer.gradient_clip_val`` is set); 0 disables it.
    """

    num_views = 1
    min_batch_size = 1

    def __init__(self, backbone, optimizer, scheduler=None, mask_ratio: float = 0.4, vocab_size: int = 8192,
                 tokenizer_path: str | None = None, tokenizer_fit_images: int = 10000, tokenizer_fit_patches: int = 200000,
                 tokenizer_fit_iters: int = 20, clip_grad: float = 3.0, lr_scaling: str = "linear",
                 compile: bool = False, sync_batchnorm: bool = False):
        super().__init__(backbone, optimizer, scheduler, lr_scaling, compile=compile, sync_batchnorm=sync_batchnorm)
        check(has_token_interface(backbone), "backbone", type(backbone).__name__,
              f"{token_interface_help(backbone)}: BEiT masks image patches")
        check_mask_ratio(mask_ratio)
        check(isinstance(vocab_size, int) and vocab_size >= 2, "method.vocab_size", vocab_size, "an integer >= 2")
        check(tokenizer_fit_iters >= 1 and tokenizer_fit_images >= 1 and tokenizer_fit_patches >= vocab_size,
              "method.tokenizer_fit_patches", tokenizer_fit_patches, f"at least vocab_size={vocab_size} (and fit images, iters >= 1)")
        check(clip_grad >= 0, "method.clip_grad", clip_grad, "a gradient norm >= 0 (0: no clipping)")
        self.mask_ratio, self.vocab_size, self.clip_grad = float(mask_ratio), vocab_size, clip_grad
        self.tokenizer_path = tokenizer_path
        self.fit_budget = dict(max_images=tokenizer_fit_images, max_patches=tokenizer_fit_patches, iters=tokenizer_fit_iters)
        if tokenizer_path:
            self.tokenizer = load_tokenizer(tokenizer_path, backbone.image_size, backbone.patch_size, vocab_size)
        else:
            self.tokenizer = PatchKMeansTokenizer(vocab_size, backbone.patch_size, backbone.image_size)
        self.tokenizer.requires_grad_(False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))
        self.head = nn.Linear(backbone.embed_dim, vocab_size)
        beit_trunc_normal_(self.mask_token)  # BEiT's trunc_normal_: cut at +-std
        beit_trunc_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # at most this many patches are masked per image (BlockwiseMasking stops at its budget): the head runs
        # on this fixed number of positions per image, so the step has no data-dependent shape
        self.max_masked = BlockwiseMasking(mask_ratio, None).num_masked(backbone.num_patches)
        # this rank's histogram of the epoch's target tokens: a plain tensor, not a buffer, since DDP would
        # overwrite a buffer with rank 0's before every forward; summed over ranks at the end of the epoch
        self.code_counts = torch.zeros(vocab_size, dtype=torch.long)
        self._tokenizer_ready = False

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    # -- tokenizer ----------------------------------------------------------------------------------------

    def fit_tokenizer(self, datamodule) -> None:
        """Make the tokenizer ready for ``datamodule``'s batches: set its input normalisation and, if it has
        no codebook yet (no file, no checkpoint), fit one on the training split and save it in the run dir."""
        self.tokenizer.set_input_normalization(datamodule.mean, datamodule.std)
        if not bool(self.tokenizer.fitted):
            dataset = TransformedDataset(datamodule.split("train"), datamodule.train_transform)
            fitted, stats = fit_kmeans_tokenizer(
                dataset, datamodule.mean, datamodule.std, self.backbone.image_size, self.backbone.patch_size,
                self.vocab_size, seed=datamodule.seed, num_workers=datamodule.num_workers, device=self.device, **self.fit_budget)
            self.tokenizer.set_codebook(fitted.codebook)
            if world_size() > 1:  # every rank fitted the same data; make the codebooks bit-identical
                torch.distributed.broadcast(self.tokenizer.codebook, src=0)
            rank_zero_info(
                f"k-means tokenizer: {self.vocab_size} codes fitted on {stats['patches']} patches of {stats['images']} "
                f"images; codebook usage {stats['usage']:.1%}, perplexity {stats['perplexity']:.0f}")
            trainer = self._trainer
            if trainer is not None and trainer.is_global_zero:
                path = save_tokenizer(self.tokenizer, Path(trainer.default_root_dir) / "tokenizer.pt", fit=stats)
                rank_zero_info(f"k-means tokenizer saved to {path} (reuse it with method.tokenizer_path={path})")
                for logger in trainer.loggers:
                    logger.log_metrics({f"tokenizer/{k}": float(v) for k, v in stats.items()}, step=trainer.global_step)
        self._tokenizer_ready = True

    def on_fit_start(self) -> None:
        self.fit_tokenizer(self.trainer.datamodule)

    # -- training -----------------------------------------------------------------------------------------

    def forward_beit(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokenise, encode with mask tokens, predict at masked positions. Returns the loss, the token
        accuracy at masked positions, the encoding (B, 1 + N, D) and the target tokens (B, N).

        The reference code runs the head on ``x[bool_masked_pos]``, a shape known only on the device (a
        host-device synchronisation on GPUs). Here every image contributes ``max_masked`` positions: its
        masked patches first (all of them: a mask never holds more), then unmasked ones to fill, which take
        no loss (ignore_index). Same loss and gradients; the head computes up to ``max_masked`` - M rows more.
        """
        if not self._tokenizer_ready:
            raise RuntimeError("BEiT's tokenizer is not ready: call fit_tokenizer(datamodule) before training")
        torch._assert_async(mask.sum(dim=1).max() <= self.max_masked, "a BEiT mask holds more than max_masked patches")
        tokens = self.tokenizer(images)  # (B, N) int64, no_grad
        encoded = self.backbone.forward_tokens(images, bool_masked_pos=mask, mask_token=self.mask_token)  # (B, 1 + N, D)
        ids = torch.argsort(mask.to(torch.uint8), dim=1, descending=True, stable=True)[:, : self.max_masked]  # (B, M)
        selected = torch.gather(mask, 1, ids)  # (B, M): False where an image masks fewer than M patches
        features = torch.gather(encoded[:, 1:], 1, ids[..., None].expand(-1, -1, encoded.shape[-1]))  # (B, M, D)
        logits = self.head(features)  # (B, M, V)
        targets = torch.gather(tokens, 1, ids)  # (B, M)
        loss = beit_loss(logits, targets, selected)
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == targets) & selected
            accuracy = correct.sum() / selected.sum().clamp_min(1)
        return loss, accuracy, encoded, tokens

    def training_step(self, batch, batch_idx: int):
        (images, mask), _ = batch
        loss, accuracy, encoded, tokens = self.forward_beit(images, mask)
        if self.code_counts.device != tokens.device:  # only without a trainer (on_train_epoch_start makes it)
            self.code_counts = self.code_counts.to(tokens.device)
        ids = tokens.flatten()
        self.code_counts.index_add_(0, ids, torch.ones_like(ids))  # bincount's length depends on the data
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_step("train/token_acc", accuracy)
        self.log_lr()
        h = self.backbone.pool(encoded).detach()
        return {"loss": loss, "h": h, "z": h}

    def validation_masks(self, batch_size: int, seed: int) -> torch.Tensor:
        """(B, N) masks from the training pipeline's mask generator, drawn from ``seed``."""
        transform = getattr(self._trainer.datamodule, "train_transform", None) if self._trainer is not None else None
        masking = getattr(transform, "masking", None) or BlockwiseMasking(self.mask_ratio, None)
        grid = self.backbone.grid_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([masking(grid, grid) for _ in range(batch_size)])

    def validation_step(self, batch, batch_idx: int):
        """``val/loss`` and ``val/token_acc`` on validation images masked from seed ``batch_idx`` (the same
        masks every epoch); ``h`` are the pooled features of the masked input, the kind the online probe is
        trained on (the kNN encodes clean images)."""
        x, y = batch
        loss, accuracy, encoded, _ = self.forward_beit(x, self.validation_masks(x.shape[0], batch_idx).to(x.device))
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/token_acc", accuracy, sync_dist=True)
        return {"h": self.backbone.pool(encoded), "y": y}

    def on_train_epoch_start(self) -> None:
        self.code_counts = torch.zeros(self.vocab_size, dtype=torch.long, device=self.device)

    def on_train_epoch_end(self) -> None:
        """Log the usage and perplexity of the epoch's target tokens over all ranks (each rank counted its own)."""
        counts = self.code_counts.clone()
        if world_size() > 1:
            torch.distributed.all_reduce(counts)
        if counts.sum() > 0:
            stats = codebook_stats(counts)
            self.log("train/codebook_usage", stats["usage"])
            self.log("train/codebook_perplexity", stats["perplexity"])
        self.code_counts.zero_()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val is None and self.clip_grad > 0:
            gradient_clip_val, gradient_clip_algorithm = self.clip_grad, "norm"
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
