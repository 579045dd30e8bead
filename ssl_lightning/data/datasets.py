"""Image datasets returning ``(PIL RGB image, label)``; label -1 marks an unlabelled image."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from ssl_lightning.config import ConfigError


class ArrayImages(Dataset):
    """In-memory uint8 images (N, H, W, 3) with integer labels (N,)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        self.images, self.labels = images, labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]), int(self.labels[i])


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded train/val split of ``range(n)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def digits(split: str, image_size: int, val_fraction: float = 0.2) -> ArrayImages:
    """UCI ML hand-written digits (Alpaydin & Kaynak, 1998) as shipped inside scikit-learn.

    1,797 real 8x8 grayscale scans of digits 0-9 (the UCI test set: 13 writers), 17 grey levels (0-16); no
    download ever. Images are upsampled to ``image_size`` (bilinear) and replicated to RGB; the split is
    fixed (seed 0), 80/20: 1,438 training and 359 validation images.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    gray = (data.images * (255.0 / 16.0)).round().astype(np.uint8)  # (N, 8, 8)
    resized = np.stack([np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.BILINEAR)) for g in gray])
    rgb = np.repeat(resized[..., None], 3, axis=-1)
    train, val = split_indices(len(rgb), val_fraction)
    keep = train if split in ("train", "bank") else val
    return ArrayImages(rgb[keep], data.target[keep])


def synthetic(split: str, image_size: int, num_classes: int = 4, num_samples: int = 64, seed: int = 0) -> ArrayImages:
    """Made-up images with learnable class structure, for tests: each class is a smooth random colour field;
    each image is its class field, randomly shifted, plus pixel noise. Deterministic for ``seed``."""
    g = np.random.default_rng(seed)
    coarse = g.uniform(0, 255, size=(num_classes, 4, 4, 3)).astype(np.uint8)
    fields = np.stack([np.asarray(Image.fromarray(c).resize((2 * image_size, 2 * image_size), Image.BICUBIC)) for c in coarse])
    rng = np.random.default_rng(seed + (1 if split == "val" else 0))
    labels = rng.integers(0, num_classes, size=num_samples)
    images = np.empty((num_samples, image_size, image_size, 3), dtype=np.uint8)
    for i, y in enumerate(labels):
        dy, dx = rng.integers(0, image_size, size=2)
        patch = fields[y, dy : dy + image_size, dx : dx + image_size].astype(np.float32)
        images[i] = np.clip(patch + rng.normal(0, 12, size=patch.shape), 0, 255).astype(np.uint8)
    return ArrayImages(images, labels)


def torchvision_dataset(name: str, split: str, root: str, download: bool) -> Dataset:
    """CIFAR-10, CIFAR-100 or STL-10 through torchvision (``download=True`` fetches them on first use).

    STL-10 pretrains on ``train+unlabeled`` (105k images, unlabelled ones with label -1), uses the 5k
    labelled ``train`` images as the kNN bank and ``test`` as validation.
    """
    import torchvision.datasets as tvd

    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            return cls(root, train=split in ("train", "bank"), download=download)
        if name == "stl10":
            stl_split = {"train": "train+unlabeled", "bank": "train", "val": "test"}[split]
            return tvd.STL10(root, split=stl_split, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise ConfigError(f"data.root={root!r}: {name} is not there ({e}); set data.download=true to fetch it") from e
    raise ConfigError(f"data.name={name!r} is not allowed: one of cifar10, cifar100, stl10")


def load_rgb(path: str) -> Image.Image:
    """Open an image file as RGB: grayscale, palette (with or without transparency), RGBA and CMYK files are
    converted; the file is fully decoded here so that a truncated file fails now, not later."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _check_image(path: str, decode: bool) -> str | None:
    """None if the file is a readable image, else the reason."""
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
            else:
                image.verify()
        return None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
        return f"{type(e).__name__}: {e}"


class CheckedImageFolder(Dataset):
    """An ImageFolder tree (``root/<class>/<image>``) that survives bad files.

    At construction every file is checked (``verify="header"``: PIL's header/structure check, cheap;
    ``"decode"``: full decode, catches truncated JPEGs too; ``"none"``). Unreadable files are dropped with
    one warning that counts and names them, or, with ``on_bad_image="error"``, raise ``ConfigError``. A file
    that still fails when loaded (e.g. a truncated JPEG under ``verify="header"``) is reported in a warning
    and replaced by the next readable sample, so a long run never dies on one bad file.
    """

    def __init__(self, root: str | Path, key: str, verify: str = "header", on_bad_image: str = "skip"):
        import torchvision.datasets as tvd
        from concurrent.futures import ThreadPoolExecutor

        from ssl_lightning.config import check

        check(verify in ("none", "header", "decode"), "data.verify_images", verify, "'none', 'header' or 'decode'")
        check(on_bad_image in ("skip", "error"), "data.on_bad_image", on_bad_image, "'skip' or 'error'")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{key}={str(root)!r} is not a directory: give an ImageFolder tree (DIR/<class>/<image>)")
        try:
            folder = tvd.ImageFolder(str(path), loader=load_rgb, allow_empty=False)
        except FileNotFoundError as e:  # no class folders, or no images in them
            raise ConfigError(f"{key}={str(root)!r} holds no images in class folders ({e})") from e
        self.root, self.classes, self.on_bad_image = str(path), folder.classes, on_bad_image
        samples = folder.samples
        self.bad: list[tuple[str, str]] = []
        if verify != "none":
            with ThreadPoolExecutor(max_workers=8) as pool:
                reasons = list(pool.map(lambda s: _check_image(s[0], verify == "decode"), samples, chunksize=256))
            self.bad = [(s[0], r) for s, r in zip(samples, reasons) if r is not None]
            samples = [s for s, r in zip(samples, reasons) if r is None]
        if self.bad:
            listing = "; ".join(f"{p} ({r})" for p, r in self.bad[:20]) + (" ..." if len(self.bad) > 20 else "")
            if on_bad_image == "error":
                raise ConfigError(f"{key}={str(root)!r} has {len(self.bad)} unreadable image(s): {listing} "
                                  "(set data.on_bad_image=skip to train without them)")
            warnings.warn(f"{key}: skipping {len(self.bad)} unreadable image(s): {listing}", stacklevel=2)
        if not samples:
            raise ConfigError(f"{key}={str(root)!r} holds no readable images")
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.failed_at_load: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        for offset in range(len(self.samples)):
            path, target = self.samples[(i + offset) % len(self.samples)]
            try:
                return load_rgb(path), target
            except Exception as e:  # noqa: BLE001
                if self.on_bad_image == "error":
                    raise RuntimeError(f"unreadable image {path}: {e}") from e
                if path not in self.failed_at_load:
                    self.failed_at_load.add(path)
                    warnings.warn(f"unreadable image {path} ({type(e).__name__}: {e}) replaced by the next one "
                                  f"({len(self.failed_at_load)} such file(s) in this process)", stacklevel=2)
        raise RuntimeError(f"no readable image left in {self.root}")


def labels_of(dataset: Dataset) -> np.ndarray:
    """The integer labels (N,) of a dataset, read from its ``labels`` / ``targets`` (torchvision, ImageFolder,
    :class:`ArrayImages`) without decoding images; other datasets are iterated."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for attr in ("labels", "targets"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return np.asarray(values, dtype=np.int64)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a fixed, class-balanced subset: ``max(1, round(fraction * n_c))`` images of every
    class c, the first ones of a permutation seeded by (seed, c). Unlabelled images (-1) are left out.

    Each class's permutation depends only on (seed, c), so a smaller fraction's subset is contained in a
    larger one's (the 1% images are among the 10% images) and adding images of one class never changes
    another class's choice.
    """
    labels = np.asarray(labels)
    keep = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        g = torch.Generator().manual_seed(hash((seed, int(c))) & 0x7FFF_FFFF_FFFF_FFFF)
        order = torch.randperm(len(members), generator=g).numpy()
        keep.append(members[order[: max(1, int(round(fraction * len(members))))]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
