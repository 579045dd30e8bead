"""Jigsaw puzzles (Noroozi & Favaro, 2016, Sec. 3): an image cut into a grid of tiles, shuffled by one
permutation of a fixed set; the network names the permutation.

The paper's recipe (Sec. 3.2-3.3): crop a 225x225 window, split it into a 3x3 grid of 75x75 cells and cut
a 64x64 tile at a random position inside each cell, so that tiles are separated by random gaps and their
edges cannot be matched (the cue would be continuity of lines and texture across borders, not what the
tiles show); normalise each tile's mean and standard deviation independently (per channel, as the
reference implementation), so that tiles cannot be
placed by their brightness or contrast; jitter colours and use grayscale images, so that they cannot be
placed by chromatic aberration. Here the cell side is ``size // grid_size`` and the tile side a fraction of
it (64/75 = 0.85 by default); the tiles are optionally resized to ``tile_size`` (ViTs need their input size).

A sample is ``({"tiles": (n, 3, t, t), "perm": k, "image": (3, S, S)}, label)``: the tiles in puzzle order
(position ``j`` shows the tile of cell ``permutations[k, j]``), the permutation index ``k`` and the
augmented image before tiling, normalised like evaluation images (its backbone features feed the online
linear probe).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from ssl_lightning.config import check
from ssl_lightning.transforms.permutations import check_permutation_args, hamming_permutations
from ssl_lightning.transforms.views import ViewSpec

MIN_TILE = 2  # a tile of one pixel has no content to place


def tile_geometry(size: int, grid_size: int, tile_fraction: float) -> tuple[int, int, int]:
    """``(cell, tile, margin)``: cell side, tile side (floor of ``tile_fraction`` x cell) and the offset
    of the grid inside a ``size``-px image (the ``size % grid_size`` leftover pixels are split evenly)."""
    cell = size // grid_size
    tile = int(tile_fraction * cell + 1e-9)
    return cell, tile, (size - grid_size * cell) // 2


def min_image_size(grid_size: int, tile_fraction: float, jitter: bool) -> int:
    """The smallest image side whose tiles are at least ``MIN_TILE`` px and, with jitter, smaller than the cell."""
    size = grid_size
    while True:
        cell, tile, _ = tile_geometry(size, grid_size, tile_fraction)
        if tile >= MIN_TILE and (tile < cell or not jitter):
            return size
        size += 1


def check_tile_geometry(size: int, grid_size: int, tile_fraction: float, jitter: bool, key: str) -> None:
    cell, tile, _ = tile_geometry(size, grid_size, tile_fraction)
    if tile >= MIN_TILE and (tile < cell or not jitter):
        return
    need = min_image_size(grid_size, tile_fraction, jitter)
    gap = " and a gap of at least 1 px for the random tile position (augment.tile_jitter)" if jitter else ""
    check(False, key, size, f"an image side of at least {need} px: a {grid_size}x{grid_size} grid of {size}-px images has "
          f"{cell}-px cells and {tile}-px tiles (augment.tile_fraction={tile_fraction}), but tiles need at least "
          f"{MIN_TILE} px{gap}; raise the image side (e.g. augment.size) or lower method.grid_size")


def centred_offsets(grid_size: int, cell: int, tile: int) -> torch.Tensor:
    """(n, 2) offsets that put every tile in the centre of its cell (no jitter)."""
    return torch.full((grid_size * grid_size, 2), (cell - tile) // 2, dtype=torch.long)


def cut_tiles(images: torch.Tensor, grid_size: int, cell: int, tile: int, offsets: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """Cut ``images`` (..., C, H, W) into (..., n, C, tile, tile), cells in row-major order.

    The tile of cell ``(r, c)`` starts at ``margin + (r, c) * cell + offsets[r * grid_size + c]``.
    """
    tiles = []
    for k, (dy, dx) in enumerate(offsets.tolist()):
        r, c = divmod(k, grid_size)
        y, x = margin + r * cell + dy, margin + c * cell + dx
        tiles.append(images[..., y : y + tile, x : x + tile])
    return torch.stack(tiles, dim=-4)


def assemble_tiles(tiles: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Inverse of :func:`cut_tiles` without gaps: (..., n, C, t, t) -> (..., C, grid*t, grid*t)."""
    rows = [torch.cat(tiles[..., r * grid_size : (r + 1) * grid_size, :, :, :].unbind(-4), dim=-1) for r in range(grid_size)]
    return torch.cat(rows, dim=-2)


def shuffle_tiles(tiles: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Puzzle order: ``out[..., j] = tiles[..., perm[..., j]]`` for tiles (..., n, C, t, t) and perm (..., n)."""
    index = perm.reshape(*perm.shape, 1, 1, 1).expand(*perm.shape, *tiles.shape[-3:])
    return torch.gather(tiles, -4, index)


def unshuffle_tiles(tiles: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_tiles`: puts every tile back in its cell."""
    return shuffle_tiles(tiles, perm.argsort(dim=-1))


def normalise_tiles(tiles: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean, unit standard deviation per tile and per channel, over the channel's pixels (as the reference
    implementation does, bbrattoli/JigsawPuzzlePytorch ``Dataset/JigsawImageLoader.py``: ``tile.view(3, -1)``
    mean and (unbiased) std per channel, ``s[s == 0] = 1``): brightness, contrast and per-channel colour
    casts no longer tell where a tile was. A flat channel (std 0) is only centred. (..., 3, t, t) -> same."""
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    std = tiles.std(dim=(-2, -1), keepdim=True, correction=1)
    return (tiles - mean) / torch.where(std < eps, torch.ones_like(std), std)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, h, w) -> (..., 1, h, w) luma (ITU-R 601, as torchvision's grayscale)."""
    r, g, b = x.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images (N, 3, h, w) in [0, 1] by ``shift`` (N,) turns, through HSV, one shift
    per image (what ``torchvision``'s ``adjust_hue`` does with a single shift)."""
    r, g, b = x.unbind(-3)
    v, _ = x.max(dim=-3)
    delta = v - x.min(dim=-3).values
    sat = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    d = delta.clamp_min(1e-12)
    rc, gc, bc = (v - r) / d, (v - g) / d, (v - b) / d
    hue = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    h6 = hue * 6.0
    sector = h6.floor().long() % 6  # (N, h, w)
    f = h6 - h6.floor()
    p, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    table = torch.stack([torch.stack(c) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))])  # (3, 6, N, h, w)
    return table.gather(1, sector[None, None].expand(3, 1, *sector.shape)).squeeze(1).transpose(0, 1)  # (N, 3, h, w)


def colour_tiles(tiles: torch.Tensor, jitter: Sequence[float], jitter_prob: float, grayscale_prob: float) -> torch.Tensor:
    """Colour jitter and grayscale of tiles (n, 3, t, t) in [0, 1], each tile with its own draw, all in a few
    batched ops: with probability ``jitter_prob`` a tile gets brightness, contrast, saturation and hue factors
    drawn as ``torchvision.transforms.ColorJitter(*jitter)`` draws them (the four ops in a random order per
    image), and independently with probability ``grayscale_prob`` it becomes gray."""
    n = tiles.shape[0]
    bright, contrast, saturation, hue = jitter

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n)).view(n, 1, 1, 1)

    apply = (torch.rand(n) < jitter_prob).view(n, 1, 1, 1) if jitter_prob > 0 else None
    x = tiles
    if apply is not None and any(jitter):
        f = {"b": uniform(max(0.0, 1 - bright), 1 + bright), "c": uniform(max(0.0, 1 - contrast), 1 + contrast),
             "s": uniform(max(0.0, 1 - saturation), 1 + saturation), "h": uniform(-hue, hue)}
        for op in torch.randperm(4).tolist():
            if op == 0 and bright:
                y = (x * f["b"]).clamp(0, 1)
            elif op == 1 and contrast:
                y = (f["c"] * x + (1 - f["c"]) * _gray(x).mean(dim=(-3, -2, -1), keepdim=True)).clamp(0, 1)
            elif op == 2 and saturation:
                y = (f["s"] * x + (1 - f["s"]) * _gray(x)).clamp(0, 1)
            elif op == 3 and hue:
                y = shift_hue(x, f["h"].view(n))
            else:
                continue
            x = torch.where(apply, y, x)
    if grayscale_prob > 0:
        x = torch.where((torch.rand(n) < grayscale_prob).view(n, 1, 1, 1), _gray(x).expand_as(x), x)
    return x


class JigsawTransform:
    """PIL image -> ``{"tiles": (n, 3, t, t), "perm": k, "image": (3, image_size, image_size)}``.

    Args:
        grid_size, num_permutations, permutation_seed, permutation_criterion: the permutation set, built
            with :func:`hamming_permutations` exactly as the method builds its own (the configs interpolate
            the method's values). The method replaces it with its checkpointed copy when training starts.
        size: side of the augmented image that is cut into the grid (default: the data's image size).
        image_size: side of the returned full image (the data's evaluation size; default ``size``).
        tile_fraction: tile side / cell side, in (0, 1] (the paper: 64/75 = 0.85).
        tile_jitter: cut each tile at a random position inside its cell (the paper); off: in the centre.
        tile_size: resize tiles to this side before the encoder (a ViT's input size); ``None`` keeps them.
        crop_scale, hflip_prob: the random resized crop and flip of the image before tiling.
        jitter, jitter_prob: colour jitter (brightness, contrast, saturation, hue) of each tile, independently.
        grayscale_prob: probability that a tile is turned to grayscale, independently per tile.
        mean, std: the data's normalisation, for the full image.
        data_overrides: what the data imposes (``crop_scale``, ``hflip_prob``, ``jitter``, ``jitter_prob``,
            ``grayscale_prob``); ``blur_prob``, ``min_blur_size`` and ``solarize_prob`` are accepted and ignored (no blur or
            solarisation happens here).
    """

    _OVERRIDES = ("crop_scale", "hflip_prob", "jitter", "jitter_prob", "grayscale_prob")
    _IGNORED = ("blur_prob", "solarize_prob", "min_blur_size")

    def __init__(
        self,
        grid_size: int = 3,
        num_permutations: int = 100,
        permutation_seed: int = 0,
        permutation_criterion: str = "min",
        size: int = 32,
        image_size: int | None = None,
        tile_fraction: float = 0.85,
        tile_jitter: bool = True,
        tile_size: int | None = None,
        crop_scale: Sequence[float] = (0.6, 1.0),
        hflip_prob: float = 0.5,
        jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.3,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        data_overrides: dict | None = None,
    ):
        check_permutation_args(num_permutations, grid_size, permutation_criterion)
        settings = dict(crop_scale=tuple(crop_scale), hflip_prob=hflip_prob, jitter=tuple(jitter), jitter_prob=jitter_prob,
                        grayscale_prob=grayscale_prob)
        for key, value in (data_overrides or {}).items():
            check(key in self._OVERRIDES + self._IGNORED, f"data.augment.{key}", value,
                  f"one of the jigsaw settings {sorted(self._OVERRIDES + self._IGNORED)}")
            if key in self._OVERRIDES:
                settings[key] = tuple(value) if isinstance(value, (list, tuple)) else value
        ViewSpec(size=size, blur_prob=0.0, **settings)  # validates the shared settings with the usual messages
        jit = settings["jitter"]
        check(len(jit) == 4 and min(jit) >= 0 and jit[3] <= 0.5, "augment.jitter", list(jit),
              "[brightness, contrast, saturation, hue] strengths >= 0, hue <= 0.5")
        check(0 < tile_fraction <= 1, "augment.tile_fraction", tile_fraction, "a fraction of the cell side in (0, 1]")
        check(tile_fraction < 1 or not tile_jitter, "augment.tile_fraction", tile_fraction,
              "below 1 with augment.tile_jitter=true: the random tile position needs a gap inside the cell")
        check(tile_size is None or (isinstance(tile_size, int) and tile_size >= MIN_TILE), "augment.tile_size", tile_size,
              f"null (keep the cut size) or an integer >= {MIN_TILE}")
        image_size = image_size or size
        check_tile_geometry(size, grid_size, tile_fraction, tile_jitter, "augment.size")
        check_tile_geometry(image_size, grid_size, tile_fraction, False, "data.image_size")  # validation puzzles

        self.grid_size, self.num_tiles = grid_size, grid_size * grid_size
        self.size, self.image_size, self.tile_fraction, self.tile_jitter = size, image_size, tile_fraction, tile_jitter
        self.cell, self.cut, self.margin = tile_geometry(size, grid_size, tile_fraction)
        self.tile_size = tile_size or self.cut  # side of the tiles the encoder sees
        self.mean, self.std = list(mean), list(std)
        self.jitter, self.jitter_prob = settings["jitter"], settings["jitter_prob"]
        self.grayscale_prob = settings["grayscale_prob"]
        self.permutations = hamming_permutations(num_permutations, grid_size, permutation_seed, permutation_criterion)

        ops: list = [T.RandomResizedCrop(size, scale=settings["crop_scale"], antialias=True)]
        if settings["hflip_prob"] > 0:
            ops.append(T.RandomHorizontalFlip(settings["hflip_prob"]))
        self.crop = T.Compose([*ops, T.ToTensor()])
        self.normalize = T.Normalize(self.mean, self.std)

    def _resize(self, tiles: torch.Tensor) -> torch.Tensor:
        """(..., C, cut, cut) -> (..., C, tile_size, tile_size)."""
        if tiles.shape[-1] == self.tile_size:
            return tiles
        flat = tiles.reshape(-1, *tiles.shape[-3:])
        flat = F.interpolate(flat, size=(self.tile_size, self.tile_size), mode="bilinear", align_corners=False, antialias=True)
        return flat.reshape(*tiles.shape[:-2], self.tile_size, self.tile_size)

    def _colour(self, tiles: torch.Tensor) -> torch.Tensor:
        return colour_tiles(tiles, self.jitter, self.jitter_prob, self.grayscale_prob)

    def __call__(self, image: Image.Image) -> dict:
        x = self.crop(image)  # (3, size, size) in [0, 1]
        if self.tile_jitter:
            offsets = torch.randint(0, self.cell - self.cut + 1, (self.num_tiles, 2))
        else:
            offsets = centred_offsets(self.grid_size, self.cell, self.cut)
        tiles = cut_tiles(x, self.grid_size, self.cell, self.cut, offsets, self.margin)  # (n, 3, cut, cut)
        tiles = normalise_tiles(self._resize(self._colour(tiles)))
        k = int(torch.randint(self.permutations.shape[0], ()))
        full = x if self.image_size == self.size else self._full(x)
        return {"tiles": tiles[self.permutations[k]], "perm": k, "image": self.normalize(full)}

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                             antialias=True)[0]

    def clean_tiles(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic tiles of evaluation images (B, 3, H, W), normalised with ``mean``/``std``: centred in
        their cells, no colour changes, same tile size and normalisation as training -> (B, n, 3, t, t)."""
        mean = images.new_tensor(self.mean).view(3, 1, 1)
        std = images.new_tensor(self.std).view(3, 1, 1)
        cell, cut, margin = tile_geometry(images.shape[-1], self.grid_size, self.tile_fraction)
        tiles = cut_tiles(images * std + mean, self.grid_size, cell, cut, centred_offsets(self.grid_size, cell, cut), margin)
        return normalise_tiles(self._resize(tiles))
