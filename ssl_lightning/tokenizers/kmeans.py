"""A visual tokenizer fitted inside the framework: a k-means codebook over patch pixels.

BEiT (Bao et al., 2022) predicts the visual tokens of DALL-E's discrete VAE (8192 codes, Ramesh et al.,
2021), whose weights cannot be downloaded offline. This tokenizer is its offline stand-in: the codebook is
fitted by k-means (k-means++ seeding, Arthur & Vassilvitskii, 2007; Lloyd iterations) on the pixel
vectors of patches of augmented training images, and a patch's token is the index of its nearest code
(Euclidean distance on pixels in [0, 1]). Tokens are computed on the device, in fp32, under no_grad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssl_lightning.backbones.vit import patchify
from ssl_lightning.config import check
from ssl_lightning.data.sampler import augmentation_seed


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (M,) of the nearest code of each row of ``x`` (M, P), and its squared distance (M,)."""
    c2 = codebook.pow(2).sum(dim=1)  # (V,)
    ids, dists = [], []
    for chunk in x.split(chunk_size):
        d = chunk.pow(2).sum(dim=1, keepdim=True) - 2 * chunk @ codebook.T + c2  # (m, V)
        best, idx = d.min(dim=1)
        ids.append(idx)
        dists.append(best.clamp_min(0))
    return torch.cat(ids), torch.cat(dists)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, init_samples: int = 20000) -> tuple[torch.Tensor, list[float]]:
    """k-means on the rows of ``x`` (M, P) on its device: k-means++ seeding on up to ``init_samples`` rows,
    then ``iters`` Lloyd iterations. An empty cluster is moved onto the point farthest from its centroid,
    so the inertia never increases. Returns the centroids (k, P) and the inertia (mean squared distance)
    after each iteration. Deterministic for a seed on a given device.
    """
    if x.shape[0] < k:
        raise ValueError(f"k-means with {k} codes needs at least {k} patches, got {x.shape[0]}")
    g = torch.Generator(device=x.device).manual_seed(seed)
    sample = x[torch.randperm(x.shape[0], generator=g, device=x.device)[:init_samples]]
    centroids = torch.empty(k, x.shape[1], device=x.device, dtype=x.dtype)
    centroids[0] = sample[torch.randint(sample.shape[0], (1,), generator=g, device=x.device)]
    d2 = (sample - centroids[0]).pow(2).sum(dim=1)
    for i in range(1, k):  # k-means++: the next seed with probability proportional to D(x)^2
        if d2.sum() > 0:
            idx = torch.multinomial(d2, 1, generator=g)
        else:  # fewer distinct points than codes: duplicates, which stay unused
            idx = torch.randint(sample.shape[0], (1,), generator=g, device=x.device)
        centroids[i] = sample[idx]
        d2 = torch.minimum(d2, (sample - centroids[i]).pow(2).sum(dim=1))
    inertia = []
    for _ in range(iters):
        assign, dist = nearest_code(x, centroids)
        inertia.append(dist.mean().item())
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            far = dist.topk(min(empty.numel(), dist.numel())).indices
            centroids[empty[: far.numel()]] = x[far]
    return centroids, inertia


class PatchKMeansTokenizer(nn.Module):
    """Images -> visual-token ids (B, N): the nearest of ``vocab_size`` codes for each patch.

    Inputs are data-normalised images, as in a training batch; the tokenizer un-normalises them with the
    data's mean and std (:meth:`set_input_normalization`) so that the codebook lives in pixel space [0, 1]
    and one file serves any normalisation. The codebook is a persistent buffer (saved in checkpoints).
    """

    kind = "kmeans"

    def __init__(self, vocab_size: int, patch_size: int, image_size: int):
        super().__init__()
        self.vocab_size, self.patch_size, self.image_size = vocab_size, patch_size, image_size
        self.register_buffer("codebook", torch.zeros(vocab_size, 3 * patch_size**2))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("input_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.ones(1, 3, 1, 1), persistent=False)

    def set_input_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.input_mean.copy_(torch.as_tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.input_std.copy_(torch.as_tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))

    def set_codebook(self, codebook: torch.Tensor) -> None:
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            raise ValueError(f"codebook of shape {tuple(codebook.shape)}, expected {tuple(self.codebook.shape)}")
        self.codebook.copy_(codebook)
        self.fitted.fill_(True)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) data-normalised images -> (B, N) int64 token ids."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            pixels = images.float() * self.input_std + self.input_mean
            patches = patchify(pixels, self.patch_size)  # (B, N, P)
            ids, _ = nearest_code(patches.flatten(0, 1), self.codebook.float())
        return ids.view(patches.shape[0], patches.shape[1])


class _Keyed(Dataset):
    """``base[(index, seed)]`` for a fixed list of keys (one augmentation per image, from its seed)."""

    def __init__(self, base: Dataset, keys: list[tuple[int, int]]):
        self.base, self.keys = base, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        return self.base[self.keys[i]]


@torch.no_grad()
def collect_patches(dataset: Dataset, mean: Sequence[float], std: Sequence[float], patch_size: int, max_images: int,
                    max_patches: int, seed: int = 0, batch_size: int = 256, num_workers: int = 0,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel vectors in [0, 1] (M, 3 p^2) of the patches of up to ``max_images`` images of ``dataset`` (a
    :class:`~ssl_lightning.data.TransformedDataset` whose transform gives an image or ``(image, mask)``),
    each augmented once from its seed; then a seeded subset of ``max_patches`` patches."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:max_images].tolist()
    keys = [(i, augmentation_seed(seed, -1, i)) for i in order]
    loader = DataLoader(_Keyed(dataset, keys), batch_size=batch_size, num_workers=num_workers)
    mean_t = torch.as_tensor(list(mean), device=device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(list(std), device=device).view(1, 3, 1, 1)
    chunks = []
    for batch in loader:
        images = batch[0][0] if isinstance(batch[0], (list, tuple)) else batch[0]
        pixels = images.to(device).float() * std_t + mean_t
        chunks.append(patchify(pixels, patch_size).flatten(0, 1))
    patches = torch.cat(chunks)
    if patches.shape[0] > max_patches:
        patches = patches[torch.randperm(patches.shape[0], generator=g)[:max_patches].to(device)]
    return patches


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Fraction of codes used and perplexity exp(H) of the code histogram ``counts`` (V,)."""
    p = counts.double() / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(entropy)}


def fit_kmeans_tokenizer(dataset: Dataset, mean: Sequence[float], std: Sequence[float], image_size: int, patch_size: int,
                         vocab_size: int, max_images: int = 10000, max_patches: int = 200000, iters: int = 20,
                         seed: int = 0, num_workers: int = 0, device: torch.device | str = "cpu") -> tuple[PatchKMeansTokenizer, dict]:
    """Fit a :class:`PatchKMeansTokenizer` on ``dataset``; returns it (on ``device``) and fit statistics
    (images, patches, final inertia, codebook usage and perplexity on the fitted patches)."""
    patches = collect_patches(dataset, mean, std, patch_size, max_images, max_patches, seed, num_workers=num_workers, device=device)
    check(patches.shape[0] >= vocab_size, "method.vocab_size", vocab_size,
          f"at most the {patches.shape[0]} patches the tokenizer is fitted on (raise method.tokenizer_fit_images)")
    codebook, inertia = kmeans(patches, vocab_size, iters, seed)
    tokenizer = PatchKMeansTokenizer(vocab_size, patch_size, image_size).to(device)
    tokenizer.set_codebook(codebook)
    tokenizer.set_input_normalization(mean, std)
    ids, _ = nearest_code(patches, codebook)
    stats = codebook_stats(torch.bincount(ids, minlength=vocab_size))
    stats.update(images=min(max_images, len(dataset)), patches=patches.shape[0], inertia=inertia[-1] if inertia else float("nan"))
    return tokenizer, stats
