"""The dataset contract and the dataset registry.

A dataset reader returns whole splits as uint8 tensors (N, 3, H, W) plus int64 labels; the training
loop moves them once to the training device and augments in batch there (see ``loader.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from tekapbench.registry import Registry


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

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


@dataclass(frozen=True)
class DataOptions:
    """Where a reader looks for files and whether it may download them."""

    root: Path
    download: bool = False


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its reader, the name of its default training recipe, and the shape of its
    data (known without reading it, so that a suite can be checked before any file is opened)."""

    load: Callable[[DataOptions], ImageSplits]
    recipe: str
    num_classes: int
    image_size: int
    description: str = ""


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, *, recipe: str, num_classes: int, image_size: int, description: str = ""):
    def decorator(load: Callable[[DataOptions], ImageSplits]):
        DATASETS.register(name)(DatasetEntry(load=load, recipe=recipe, num_classes=num_classes,
                                             image_size=image_size, description=description))
        return load

    return decorator


def load_dataset(name: str, options: DataOptions) -> ImageSplits:
    return DATASETS.get(name).load(options)
