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


def check_images(paths: list[str], decode: bool, shared: bool = False, key: str = "data") -> list[str | None]:
    """For each path, why it cannot be read (None: readable), checked by 8 threads.

    With ``shared`` under an initialised process group of W ranks, rank r checks paths r, r + W, ... and
    the ranks all-gather their results, so each file is opened once in all (not once per rank) and every
    rank gets the same answer: a transient read failure on one rank cannot give the ranks different
    datasets (different lengths would make DDP's collectives mismatch). The ranks must list the same files;
    a differing listing (files added while the ranks started) raises ``ConfigError``. Every rank must call
    this at the same point (it runs two collectives).
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch.distributed as dist

    from ssl_lightning.distributed import rank, world_size

    w = world_size() if shared else 1
    mine = paths[rank() :: w] if w > 1 else paths
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(lambda p: _check_image(p, decode), mine, chunksize=256))
    if w == 1:
        return reasons
    import hashlib

    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    listings: list = [None] * w
    dist.all_gather_object(listings, digest)
    if len(set(listings)) > 1:
        raise ConfigError(f"{key}: the {w} ranks see different files (a listing changed while they started); "
                          "keep the dataset directory unchanged during a run")
    bad: list = [None] * w  # each rank's (index, reason) of its unreadable files: small
    dist.all_gather_object(bad, [(i * w + rank(), r) for i, r in enumerate(reasons) if r is not None])
    merged: list[str | None] = [None] * len(paths)
    for shard in bad:
        for index, reason in shard:
            merged[index] = reason
    return merged


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

    ``shared``: every DDP rank builds this dataset at the same point (the datamodule's
    :meth:`~ssl_lightning.data.ImageDataModule.build_splits`), so the check is split over the ranks and its
    result shared (:func:`check_images`): 1/W of the I/O per rank, and the same samples on every rank.
    """

    def __init__(self, root: str | Path, key: str, verify: str = "header", on_bad_image: str = "skip",
                 classes: list[str] | None = None, shared: bool = False):
        import torchvision.datasets as tvd

        from ssl_lightning.config import check

        check(verify in ("none", "header", "decode"), "data.verify_images", verify, "'none', 'header' or 'decode'")
        check(on_bad_image in ("skip", "error"), "data.on_bad_image", on_bad_image, "'skip' or 'error'")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{key}={str(root)!r} is not a directory: give an ImageFolder tree (DIR/<class>/<image>)")
        if classes is not None:  # a subset of the tree's class folders, labelled 0..C-1 in sorted order
            missing = [c for c in classes if not (path / c).is_dir()]
            if missing:
                raise ConfigError(f"{key}={str(root)!r} lacks {len(missing)} of the {len(classes)} classes that "
                                  f"data.classes selects: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
                                  "(give the full ImageNet train/val trees, or data.classes=null for every folder)")
            names = sorted(classes)
            try:
                samples = tvd.ImageFolder.make_dataset(str(path), {c: i for i, c in enumerate(names)},
                                                       extensions=tvd.folder.IMG_EXTENSIONS, allow_empty=False)
            except FileNotFoundError as e:
                raise ConfigError(f"{key}={str(root)!r}: a selected class folder holds no images ({e})") from e
        else:
            try:
                folder = tvd.ImageFolder(str(path), loader=load_rgb, allow_empty=False)
            except FileNotFoundError as e:  # no class folders, or no images in them
                raise ConfigError(f"{key}={str(root)!r} holds no images in class folders ({e})") from e
            names, samples = folder.classes, folder.samples
        self.root, self.classes, self.on_bad_image = str(path), names, on_bad_image
        self.bad: list[tuple[str, str]] = []
        if verify != "none":
            reasons = check_images([p for p, _ in samples], verify == "decode", shared, key)
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


#: class lists shipped with the package, selected by name with ``data.classes``
CLASS_LISTS = {"imagenet100": Path(__file__).with_name("imagenet100_classes.txt")}


def class_list(classes: str | list[str] | None) -> list[str] | None:
    """``data.classes``: ``None`` (every class folder), a list of folder names, the name of a shipped list
    (``imagenet100``: the 100 ImageNet classes of CMC, Tian et al., 2020, that solo-learn and the literature
    call ImageNet-100), or a text file of folder names (whitespace-separated)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        source = CLASS_LISTS.get(classes, Path(classes).expanduser())
        if not source.is_file():
            raise ConfigError(f"data.classes={classes!r} is not allowed: null, a list of class folders, a file of "
                              f"class folder names, or one of {', '.join(CLASS_LISTS)}")
        names = source.read_text().split()
    else:
        names = [str(c) for c in classes]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"data.classes={classes!r} is not allowed: a non-empty list of distinct class folder names")
    return names


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
