"""Datasets kept as image files in the ImageFolder layout, read as file lists and streamed (``stream.py``).

Layout (torchvision's ``ImageFolder``, what the CRD/DKD code bases read for ImageNet)::

    <folder>/train/<class>/<image>   e.g. imagenet/train/n01440764/n01440764_10026.JPEG
    <folder>/val/<class>/<image>     the validation images sorted into the same class folders

A class's label is its folder's position among the sorted ``train/`` folder names; files are taken in
sorted order; extensions as torchvision's (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp, any case).
Only names are listed here: listing 1.28 M files takes seconds, decoding them is the loader's work.

The fingerprint recorded with every result hashes each file's path under the dataset folder and its label,
not its pixels (hashing ImageNet's 150 GB would take longer than an epoch), so it holds when the folder
moves.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tekapbench.data._files import CorruptDataError
from tekapbench.data.base import LoaderSettings
from tekapbench.data.stream import FolderLoader, read_views
from tekapbench.errors import DataNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderSplits:
    """A dataset of image files: the same interface as :class:`~tekapbench.data.base.ImageSplits`."""

    name: str
    folder: Path
    train_files: np.ndarray  # paths (under ``folder``) as bytes: one buffer, not 1.28 M Python objects
    train_labels: torch.Tensor  # int64 (N,)
    test_files: np.ndarray
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int  # the crop size when the recipe names none
    class_names: tuple[str, ...] = ()
    workers: int | None = None  # decoding processes (None: stream.default_workers)
    notes: tuple[str, ...] = ()  # e.g. fewer images than the published set: results are not comparable

    in_memory = False

    def loader(self, train: bool, settings: LoaderSettings, device: torch.device | str) -> FolderLoader:
        files, labels = (self.train_files, self.train_labels) if train else (self.test_files, self.test_labels)
        return FolderLoader(files, labels, batch_size=settings.batch_size, device=device, mean=self.mean,
                            std=self.std, train=train, crop_size=settings.crop_size or self.image_size,
                            eval_resize=settings.eval_resize, flip=settings.flip,
                            channels_last=settings.channels_last, workers=self.workers,
                            drop_last=settings.drop_last and train)

    def test_images_at(self, indices: torch.Tensor, settings: LoaderSettings | None = None) -> torch.Tensor:
        """uint8 test views (resize, centre crop) of the images at ``indices``, decoded now."""
        crop = (settings.crop_size if settings else None) or self.image_size
        return read_views([self.test_files[int(i)] for i in indices], crop,
                          settings.eval_resize if settings else None)

    def fingerprint(self) -> str:
        """sha256 of every file's path under the dataset folder and its label (not of sizes or pixels: a
        stat of 1.3 M files on a cluster file system takes minutes, hashing 150 GB much longer)."""
        digest = hashlib.sha256()
        base = len(os.fsencode(self.folder))
        for files, labels in ((self.train_files, self.train_labels), (self.test_files, self.test_labels)):
            for path, label in zip(files, labels.tolist()):
                digest.update(b"%s\t%d\n" % (path[base:], label))
        return digest.hexdigest()


def _class_folders(split: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split) if entry.is_dir())


def _images_in(folder: Path) -> list[bytes]:
    names = sorted(entry.name for entry in os.scandir(folder)
                   if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES))
    return [os.fsencode(folder / name) for name in names]


def read_imagefolder(folder: Path, *, name: str, num_classes: int, mean, std, image_size: int,
                     workers: int | None = None, how_to_get: str = "",
                     published: tuple[int, int] | None = None) -> FolderSplits:
    """List ``<folder>/train`` and ``<folder>/val``; every problem names the folder and what was expected.
    ``published``: the (train, val) image counts of the real set; other counts are read, with a note
    (a half-extracted archive changes the test set; a subset is fine for trying things)."""
    folder = Path(folder)
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise DataNotFoundError(f"{name} not found: expected the folder {folder / split} (layout "
                                    f"{folder}/{{train,val}}/<class>/<image>). {how_to_get}".strip())
    classes = _class_folders(folder / "train")
    if len(classes) != num_classes:
        raise CorruptDataError(f"{name}: {folder / 'train'} should hold {num_classes} class folders, found "
                               f"{len(classes)}. {how_to_get}".strip())
    index = {c: i for i, c in enumerate(classes)}
    val_classes = _class_folders(folder / "val")
    if not val_classes and any(p.suffix.lower() in IMAGE_SUFFIXES for p in (folder / "val").iterdir()):
        raise CorruptDataError(f"{name}: {folder / 'val'} holds images but no class folders; sort them into "
                               f"val/<class>/ as in train/ (for ImageNet, the usual valprep.sh does it)")
    strangers = [c for c in val_classes if c not in index]
    if strangers:
        raise CorruptDataError(f"{name}: {folder / 'val'} has class folders that train/ lacks: "
                               f"{', '.join(strangers[:5])}{' ...' if len(strangers) > 5 else ''}")
    splits = {}
    for split, names in (("train", classes), ("val", val_classes)):
        files, labels = [], []
        for c in names:
            found = _images_in(folder / split / c)
            if not found and split == "train":
                raise CorruptDataError(f"{name}: no images in {folder / split / c} (allowed extensions: "
                                       f"{', '.join(IMAGE_SUFFIXES)})")
            files += found
            labels += [index[c]] * len(found)
        if not files:
            raise CorruptDataError(f"{name}: no images under {folder / split}")
        splits[split] = (np.array(files, dtype=bytes), torch.tensor(labels, dtype=torch.int64))
    found = (len(splits["train"][0]), len(splits["val"][0]))
    notes = () if published is None or found == published else (
        f"{folder} holds {found[0]:,} training and {found[1]:,} validation images in "
        f"{len(classes)}/{len(val_classes)} class folders; {name} has {published[0]:,} and {published[1]:,}: "
        "numbers from it are not comparable with published ones",)
    return FolderSplits(name=name, folder=folder, train_files=splits["train"][0], train_labels=splits["train"][1],
                        test_files=splits["val"][0], test_labels=splits["val"][1], num_classes=num_classes,
                        mean=tuple(mean), std=tuple(std), image_size=image_size, class_names=tuple(classes),
                        workers=workers, notes=notes)
