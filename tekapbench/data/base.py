"""The dataset contract and the dataset registry.

A dataset is read in one of two forms, with one interface (``loader``, ``test_images_at``, ``fingerprint``):

- :class:`ImageSplits`: whole splits as uint8 tensors (N, 3, H, W) plus int64 labels; the training loop moves
  them once to the training device and augments in batch there (``loader.py``: the fast path);
- ``FolderSplits`` (``imagefolder.py``): lists of image files, decoded and augmented in worker processes
  while the device trains (``stream.py``), for datasets that do not fit in memory (ImageNet).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from tekapbench.registry import Registry


@dataclass(frozen=True)
class LoaderSettings:
    """How a split is batched and augmented; built from a run's recipe.

    ``crop_padding`` applies to in-memory splits (RandomCrop with zero padding); ``crop_size`` and
    ``eval_resize`` to image files (RandomResizedCrop to ``crop_size`` for training; for testing the
    shorter side resized to ``eval_resize``, then a centre crop of ``crop_size``). None: the dataset's own.
    """

    batch_size: int
    crop_padding: int = 4
    flip: bool = True
    crop_size: int | None = None
    eval_resize: int | None = None
    channels_last: bool = False
    drop_last: bool = False  # training: leave out the last, incomplete batch of an epoch


class BatchSource(Protocol):
    """What the training loop and the evaluations iterate: DeviceLoader and FolderLoader."""

    labels: torch.Tensor  # int64 (N,) on the device
    num_images: int

    def __len__(self) -> int: ...

    def epoch(self, generator: torch.Generator | None = None) -> Iterator: ...


class Splits(Protocol):
    """What a reader returns and the training loop and evaluations read: ImageSplits or FolderSplits."""

    name: str
    train_labels: torch.Tensor  # int64 (N,)
    test_labels: torch.Tensor  # int64 (M,)
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    notes: tuple[str, ...]  # what a user should know about the data read (an incomplete set, ...)
    in_memory: bool  # whole splits as tensors (test_images, train_images), or files streamed

    @property
    def image_size(self) -> int: ...  # of the stored images, or the default crop of image files

    def loader(self, train: bool, settings: LoaderSettings, device: torch.device | str) -> BatchSource: ...

    def test_images_at(self, indices: torch.Tensor, settings: LoaderSettings | None = None) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class ImageSplits:
    name: str
    train_images: torch.Tensor  # uint8 (N, 3, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, 3, H, W)
    test_labels: torch.Tensor  # int64 (M,)
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    in_memory = True

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    def loader(self, train: bool, settings: LoaderSettings, device: torch.device | str) -> "BatchSource":
        from tekapbench.data.loader import DeviceLoader

        images, labels = (self.train_images, self.train_labels) if train else (self.test_images, self.test_labels)
        return DeviceLoader(images, labels, batch_size=settings.batch_size, device=device, mean=self.mean,
                            std=self.std, train=train, crop_padding=settings.crop_padding, flip=settings.flip,
                            channels_last=settings.channels_last, drop_last=settings.drop_last and train)

    def test_images_at(self, indices: torch.Tensor, settings: LoaderSettings | None = None) -> torch.Tensor:
        """uint8 (len(indices), 3, H, W): the test images at ``indices``, as the test loader sees them."""
        return self.test_images[indices]

    def fingerprint(self) -> str:
        """sha256 of the splits' pixels and labels: a number can be traced to the exact data it came from."""
        digest = hashlib.sha256()
        for t in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class DataOptions:
    """Where a reader looks for files and whether it may download them."""

    root: Path
    download: bool = False
    workers: int | None = None  # decoding processes for datasets of image files (None: stream.default_workers)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its reader, the name of its default training recipe, and the shape of its
    data (known without reading it, so that a suite can be checked before any file is opened)."""

    load: Callable[[DataOptions], Splits]
    recipe: str
    num_classes: int
    image_size: int  # of an in-memory split; for image files, the default crop size
    description: str = ""
    files: bool = False  # read as image files and streamed (FolderSplits), not held in memory


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, *, recipe: str, num_classes: int, image_size: int, description: str = "",
                     files: bool = False):
    def decorator(load: Callable[[DataOptions], Splits]):
        DATASETS.register(name)(DatasetEntry(load=load, recipe=recipe, num_classes=num_classes,
                                             image_size=image_size, description=description, files=files))
        return load

    return decorator


def load_dataset(name: str, options: DataOptions) -> Splits:
    return DATASETS.get(name).load(options)
