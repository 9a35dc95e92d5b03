"""CIFAR-100 from the standard ``cifar-100-python/`` folder (the extracted ``cifar-100-python.tar.gz``).

Our own reader, not torchvision's ``CIFAR100``: that class checks the MD5 sums of the real files, so the
small fixtures the tests write in the same format would fail its integrity check. torchvision is only used to
download (and verify) the real archive when the suite allows it.

On-disk format: ``train``, ``test`` and ``meta`` are pickles written by Python 2 (read with
``encoding='latin1'``). ``train``/``test`` hold ``data`` (uint8, N x 3072: the 1024 red values, then 1024
green, then 1024 blue, each a 32x32 image in row-major order) and ``fine_labels`` (0..99); ``meta`` holds
``fine_label_names``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tekapbench.data._files import CorruptDataError, load_pickle, missing_files
from tekapbench.data.base import DataOptions, ImageSplits, register_dataset
from tekapbench.errors import DataNotFoundError

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
NUM_CLASSES = 100
SIZE = 32
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

_FIX_CORRUPT = (
    "Delete the cifar-100-python folder and download it again (suite option `download = true` in the "
    f"[data] table) or extract {URL} there again."
)


def _not_found_message(root: Path, missing: list[Path]) -> str:
    folder = root / FOLDER
    return (
        f"CIFAR-100 not found: expected {missing[0]}"
        + (f" (also missing: {', '.join(p.name for p in missing[1:])})" if len(missing) > 1 else "")
        + f". Either set `download = true` in the suite's [data] table to download it (about 170 MB) into "
        f"{root}, or download {URL} yourself and extract it so that {folder}/ holds train, test and meta."
    )


def _download(root: Path) -> None:
    import torchvision  # only needed here; keeps `import tekapbench.data` light

    try:
        torchvision.datasets.CIFAR100(root=str(root), train=True, download=True)
    except Exception as exc:  # no network, checksum mismatch, disk full: one readable message
        raise DataNotFoundError(
            f"CIFAR-100: downloading into {root} failed ({type(exc).__name__}: {exc}). Without network "
            f"access, download {URL} elsewhere and extract it so that {root / FOLDER}/ holds train, test "
            "and meta."
        ) from exc


def _split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    entry: dict[str, Any] = load_pickle(path, dataset="CIFAR-100", fix=_FIX_CORRUPT)
    for key in ("data", "fine_labels"):
        if key not in entry:
            raise CorruptDataError(f"CIFAR-100: {path} has no {key!r} entry. {_FIX_CORRUPT}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry["fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIZE * SIZE:
        raise CorruptDataError(
            f"CIFAR-100: {path}: 'data' should be uint8 of shape (N, {3 * SIZE * SIZE}), found "
            f"{data.dtype} {tuple(data.shape)}. {_FIX_CORRUPT}"
        )
    if labels.shape != (data.shape[0],):
        raise CorruptDataError(
            f"CIFAR-100: {path}: {data.shape[0]} images but {labels.size} fine labels. {_FIX_CORRUPT}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise CorruptDataError(
            f"CIFAR-100: {path}: fine labels must lie in 0..{NUM_CLASSES - 1}, found "
            f"{labels.min()}..{labels.max()}. {_FIX_CORRUPT}"
        )
    # Each row is the R plane, then G, then B, each row-major: exactly (3, 32, 32) in C order.
    images = torch.from_numpy(np.array(data, dtype=np.uint8, copy=True).reshape(-1, 3, SIZE, SIZE))
    return images, torch.from_numpy(labels.astype(np.int64))


def _class_names(path: Path) -> tuple[str, ...]:
    meta = load_pickle(path, dataset="CIFAR-100", fix=_FIX_CORRUPT)
    names = meta.get("fine_label_names")
    if not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES:
        raise CorruptDataError(
            f"CIFAR-100: {path} should list {NUM_CLASSES} 'fine_label_names'. {_FIX_CORRUPT}"
        )
    return tuple(str(name) for name in names)


def read_cifar100(root: Path) -> ImageSplits:
    """Read ``<root>/cifar-100-python/`` (no download); errors name the file and the fix."""
    folder = Path(root) / FOLDER
    missing = missing_files(folder, FILES)
    if missing:
        raise DataNotFoundError(_not_found_message(Path(root), missing))
    train_images, train_labels = _split(folder / "train")
    test_images, test_labels = _split(folder / "test")
    return ImageSplits(
        name="cifar100",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=NUM_CLASSES,
        mean=MEAN,
        std=STD,
        class_names=_class_names(folder / "meta"),
    )


@register_dataset(
    "cifar100",
    recipe="cifar100",
    num_classes=100,
    image_size=32,
    description="CIFAR-100 (50,000 train / 10,000 test, 32x32, 100 classes) from <root>/cifar-100-python/",
)
def load_cifar100(options: DataOptions) -> ImageSplits:
    root = Path(options.root)
    if options.download and missing_files(root / FOLDER, FILES):
        _download(root)
    return read_cifar100(root)
