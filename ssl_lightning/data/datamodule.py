"""Image datamodules: multi-view training batches, clean labelled batches for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from ssl_lightning.config import ConfigError, check
from ssl_lightning.data import datasets
from ssl_lightning.data.position import TrainPosition
from ssl_lightning.data.sampler import ShardedSampler
from ssl_lightning.distributed import world_size
from ssl_lightning.transforms import eval_transform


@contextmanager
def _seeded_cpu_rng(seed: int):
    """Run with the CPU generator seeded, then put its previous state back (no side effect on the caller)."""
    gen = torch.random.default_generator
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        yield
    finally:
        gen.set_state(state)


class TransformedDataset(Dataset):
    """Applies ``transform`` to the image of ``base[i]``; keys ``(i, seed)`` draw the augmentation from ``seed``."""

    def __init__(self, base: Dataset, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            image, label = self.base[index]
            with _seeded_cpu_rng(seed):
                return self.transform(image), label
        image, label = self.base[key]
        return self.transform(image), label


class CollateViews:
    """Collate, then make the batched views (:class:`~ssl_lightning.transforms.batched.DeviceViews`) in the
    loader worker: ``data.gpu_augment`` on a CPU run."""

    def __init__(self, device_views: Callable):
        self.device_views = device_views

    def __call__(self, samples):
        views, labels = default_collate(samples)
        return self.device_views(views), labels


class ImageDataModule(TrainPosition, L.LightningDataModule):
    """Base image datamodule. Subclasses implement :meth:`build_split` for ``train`` (pretraining images),
    ``bank`` (labelled training images for kNN; defaults to ``train``) and ``val`` (labelled, held out).

    Training batches are ``(views, labels)`` with ``views`` a list of (B, 3, h, w) tensors from
    ``train_transform``; validation and kNN batches are ``(images, labels)`` without augmentation.

    Args:
        batch_size: per device. Methods scale the LR with the total (x devices x accumulation).
        num_workers: loader processes per device.
        image_size: side of the (square) training crop and evaluation image.
        mean, std: normalisation.
        num_classes: label count, for online evaluation.
        small_images: 32-pixel-class data; ResNet backbones use the CIFAR stem.
        augment: augmentation settings the data imposes on every view (read by the ``augment`` config as
            ``data_overrides``), e.g. ``{blur_prob: 0.0}`` for 32-px images.
        train_transform: multi-view transform set from the ``augment`` config.
        seed: data order and augmentation seed (see :class:`ShardedSampler`).
        label_fraction: in (0, 1]; below 1 the ``bank`` split (the labelled training images that kNN,
            linear probes and fine-tuning learn from) is a fixed, seeded, class-balanced subset of that
            fraction (:func:`datasets.stratified_subset` with ``seed``); pretraining images are unaffected.
        eval_crop_ratio: evaluation images are resized to ``image_size / eval_crop_ratio`` and centre-cropped;
            ``None`` follows the image size (224/256 from 128 px on, as every official ImageNet evaluation;
            1 below). See :func:`~ssl_lightning.transforms.eval_transform`.
        eval_interpolation: ``bilinear`` or ``bicubic`` resize of evaluation images (the method's recipe
            selects bicubic where its official evaluation uses it: Barlow Twins, VICReg, MAE, BEiT).
    """

    def __init__(
        self,
        batch_size: int = 256,
        num_workers: int = 4,
        image_size: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        num_classes: int = 10,
        small_images: bool = True,
        augment: dict | None = None,
        train_transform: Callable | None = None,
        eval_batch_size: int | None = None,
        seed: int = 0,
        pin_memory: bool = True,
        label_fraction: float = 1.0,
        gpu_augment: bool = False,
        eval_crop_ratio: float | None = None,
        eval_interpolation: str = "bilinear",
    ):
        super().__init__()
        check(isinstance(batch_size, int) and batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
        check(isinstance(num_workers, int) and num_workers >= 0, "data.num_workers", num_workers, "an integer >= 0")
        check(isinstance(image_size, int) and image_size >= 2, "data.image_size", image_size, "an integer >= 2")
        check(len(mean) == 3 and len(std) == 3 and min(std) > 0, "data.std", list(std), "3 positive values (and 3 means)")
        check(isinstance(label_fraction, (int, float)) and 0 < label_fraction <= 1, "data.label_fraction", label_fraction,
              "a fraction in (0, 1]")
        self.batch_size, self.num_workers, self.image_size = batch_size, num_workers, image_size
        self.mean, self.std, self.num_classes, self.small_images = list(mean), list(std), num_classes, small_images
        self.augment = dict(augment or {})
        self.eval_crop_ratio, self.eval_interpolation = eval_crop_ratio, eval_interpolation
        self.evaluation_transform()  # checks both settings now, before training
        self.train_transform = train_transform or self.evaluation_transform()
        self.device_views = None
        if gpu_augment:  # crops on the CPU, the rest of the view pipeline batched on the training device
            from ssl_lightning.transforms.batched import CropViews, DeviceViews
            from ssl_lightning.transforms.views import MultiViewTransform

            check(isinstance(train_transform, MultiViewTransform), "data.gpu_augment", gpu_augment,
                  f"false with {type(train_transform).__name__}: only multi-view augmentations (augment=simclr, byol, "
                  "moco, mocov3, simsiam, swav) run on the device")
            self.train_transform, self.device_views = CropViews(train_transform), DeviceViews(train_transform)
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.seed, self.pin_memory, self.label_fraction = seed, pin_memory, float(label_fraction)
        self._splits: dict[str, Dataset] = {}
        self._shared_build = False  # inside build_splits: every rank builds the same split now

    def build_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def evaluation_transform(self) -> Callable:
        """The clean view of evaluation images: resize, centre crop, normalise (``eval_crop_ratio``,
        ``eval_interpolation``)."""
        return eval_transform(self.image_size, self.mean, self.std, self.eval_crop_ratio, self.eval_interpolation)

    def separate_bank(self) -> bool:
        """Whether the kNN bank differs from the pretraining split (STL-10: labelled train vs train+unlabeled)."""
        return False

    def split(self, name: str) -> Dataset:
        """The raw ``(PIL image, label)`` dataset of a split, built once."""
        shared = name == "bank" and not self.separate_bank()  # the bank is the (checked) training split
        if shared and self.label_fraction == 1:
            return self.split("train")
        if name not in self._splits:
            dataset = self.split("train") if shared else self.build_split(name)
            if len(dataset) == 0:
                raise ConfigError(f"the {name} split of {type(self).__name__} is empty")
            if name == "bank" and self.label_fraction < 1:
                dataset = Subset(dataset, datasets.stratified_subset(datasets.labels_of(dataset), self.label_fraction, self.seed).tolist())
                if len(dataset) == 0:
                    raise ConfigError(f"data.label_fraction={self.label_fraction}: the bank split of {type(self).__name__} has no labelled images")
            self._splits[name] = dataset
        return self._splits[name]

    def build_splits(self) -> None:
        """Build the train, bank and val splits. Every rank calls this at the same point (:meth:`setup`;
        ``eval`` after launching its ranks), so a dataset whose construction is shared between ranks (an
        ImageFolder's file check) may run collectives; a split built later on one rank only (e.g. the
        embedding projector's, on rank 0) is then already built."""
        self._shared_build = True
        try:
            for name in ("train", "bank", "val"):
                self.split(name)
        finally:
            self._shared_build = False

    def setup(self, stage: str | None = None) -> None:
        self.build_splits()
        train = self.split("train")
        per_device = len(train) // world_size()
        if per_device < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {per_device} training images per device: "
                "lower data.batch_size (incomplete batches are dropped, so no step would run)"
            )

    def _loader(self, dataset: Dataset, sampler: ShardedSampler, batch_size: int, drop_last: bool,
                collate_fn: Callable | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn,
        )

    def augments_in_workers(self) -> bool:
        """``data.gpu_augment`` when training on the CPU with loader workers: the batched half runs in the workers,
        on each collated batch, where it runs in parallel with the training process instead of in it."""
        if self.device_views is None or self.num_workers == 0:
            return False
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return device.type == "cpu"

    def augment_on_device(self, views):
        """A training batch's views on the device: ``data.gpu_augment`` turns uint8 crops into augmented views
        here unless the loader workers already did (:meth:`augments_in_workers`); otherwise unchanged."""
        if self.device_views is None or self.augments_in_workers():
            return views
        return self.device_views(views)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """``data.gpu_augment``: the training batch's views through :meth:`augment_on_device`; counts the
        training batches (:class:`TrainPosition`)."""
        self.count_train_batch()
        trainer = self.trainer
        if trainer is not None and trainer.training:
            views, labels = batch
            batch = (self.augment_on_device(views), labels)
        return batch

    def train_dataloader(self) -> DataLoader:
        dataset = TransformedDataset(self.split("train"), self.train_transform)
        sampler = ShardedSampler(len(dataset), shuffle=True, seed=self.seed, drop_last=True, with_seed=True)
        sampler = self.positioned(sampler, self.batch_size)  # a resumed run: where the interrupted one stopped
        # a transform with a ``collate`` method makes per-batch data there (I-JEPA's multi-block masks)
        collate = CollateViews(self.device_views) if self.augments_in_workers() else getattr(self.train_transform, "collate", None)
        return self._loader(dataset, sampler, self.batch_size, drop_last=True, collate_fn=collate)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Clean, labelled, sharded (not padded) loader of ``bank`` or ``val``."""
        dataset = TransformedDataset(self.split(split), self.evaluation_transform())
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=ShardedSampler(len(dataset), shuffle=False),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def supervised_dataloader(self, transform: Callable, batch_size: int | None = None) -> DataLoader:
        """Shuffled, augmented, labelled training images ``(x, y)``: the ``bank`` split (after ``label_fraction``)
        through ``transform``, for linear probes with augmentation and fine-tuning. Sharded and seeded like the
        training loader (order and each image's augmentation are a function of (seed, epoch, index)); the
        last batch is dropped when incomplete, unless it is the only one (a few-label subset smaller than a batch).
        """
        dataset = TransformedDataset(self.split("bank"), transform)
        sampler = ShardedSampler(len(dataset), shuffle=True, seed=self.seed, drop_last=True, with_seed=True)
        batch_size = batch_size or self.batch_size
        return self._loader(dataset, sampler, batch_size, drop_last=len(sampler) >= batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")


class DigitsDataModule(ImageDataModule):
    """The offline default: UCI hand-written digits shipped inside scikit-learn (see :func:`datasets.digits`)."""

    def build_split(self, split: str) -> Dataset:
        return datasets.digits(split, self.image_size)


class SyntheticDataModule(ImageDataModule):
    """Made-up class-structured images (tests, smoke runs): ``num_samples`` per split."""

    def __init__(self, num_samples: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = num_samples

    def build_split(self, split: str) -> Dataset:
        return datasets.synthetic(split, self.image_size, self.num_classes, self.num_samples, seed=self.seed)


class TorchvisionDataModule(ImageDataModule):
    """CIFAR-10, CIFAR-100 or STL-10 via torchvision, downloaded to ``root`` when ``download`` is set."""

    def __init__(self, name: str, root: str = "data", download: bool = True, **kwargs):
        super().__init__(**kwargs)
        check(name in ("cifar10", "cifar100", "stl10"), "data.name", name, "one of cifar10, cifar100, stl10")
        self.name, self.root, self.download = name, root, download

    def separate_bank(self) -> bool:
        return self.name == "stl10"

    def prepare_data(self) -> None:  # rank 0 only: fetch once
        for split in ("train", "val"):
            datasets.torchvision_dataset(self.name, split, self.root, self.download)

    def build_split(self, split: str) -> Dataset:
        return datasets.torchvision_dataset(self.name, split, self.root, download=False)


class ImageFolderDataModule(ImageDataModule):
    """Any ImageFolder tree: ``train_dir/<class>/<image>`` and ``val_dir/<class>/<image>``.

    ``classes`` selects class folders (:func:`datasets.class_list`: a list, a file, or ``imagenet100``, the
    shipped ImageNet-100 list); both trees must hold every selected class, else a ``ConfigError`` names the
    missing ones before training."""

    def __init__(self, train_dir: str | None = None, val_dir: str | None = None, verify_images: str = "header",
                 on_bad_image: str = "skip", classes: str | list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.classes = datasets.class_list(classes)
        if self.classes is not None:
            check(len(self.classes) == self.num_classes, "data.num_classes", self.num_classes,
                  f"{len(self.classes)}, the number of classes data.classes selects")
        for key, directory in (("data.train_dir", train_dir), ("data.val_dir", val_dir)):
            check(bool(directory) and Path(directory).expanduser().is_dir(), key, directory,
                  "an existing directory of class folders (DIR/<class>/<image>)")
        check(verify_images in ("none", "header", "decode"), "data.verify_images", verify_images, "'none', 'header' or 'decode'")
        check(on_bad_image in ("skip", "error"), "data.on_bad_image", on_bad_image, "'skip' or 'error'")
        self.train_dir, self.val_dir = train_dir, val_dir
        self.verify_images, self.on_bad_image = verify_images, on_bad_image

    def build_split(self, split: str) -> Dataset:
        directory, key = (self.val_dir, "data.val_dir") if split == "val" else (self.train_dir, "data.train_dir")
        return datasets.CheckedImageFolder(directory, key, self.verify_images, self.on_bad_image, self.classes,
                                           shared=self._shared_build)
