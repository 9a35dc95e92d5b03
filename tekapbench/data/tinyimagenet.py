"""TinyImageNet (``tiny-imagenet-200/``, the extracted ``tiny-imagenet-200.zip``), resized to 32x32.

Used for the transfer protocol (CRD): a CIFAR-100-trained backbone is frozen and a linear classifier is
trained on its features; the labelled ``val`` split serves as the test split (``test/`` has no labels).

On-disk format:

- ``wnids.txt``: the 200 WordNet ids, one a line; a class's index is its line number (0-based);
- ``words.txt`` (optional here): ``<wnid>\\t<names>`` for all of WordNet; gives ``class_names`` (the wnid itself
  where it is absent);
- ``train/<wnid>/images/<wnid>_<k>.JPEG``: 500 per class, 64x64; taken in sorted file-name order, class by
  class in ``wnids.txt`` order;
- ``val/images/val_<k>.JPEG`` (10,000) with labels only in ``val/val_annotations.txt`` (tab-separated: file,
  wnid, x0, y0, x1, y1); taken in the order of that file.

Some JPEGs are grayscale: every image is converted to RGB. Each is then resized to 32x32 with the same
function as STL-10 (:func:`tekapbench.data.stl10.resize_images`: bilinear with antialiasing, rounded), so
both transfer sets are prepared identically. Decoding 110,000 JPEGs takes a while (tens of seconds): a thread
pool decodes them (Pillow and torch release the GIL), and only the 32x32 results are kept; nothing is cached
on disk. ``mean``/``std`` are CIFAR-100's, for the same reason as STL-10 (the backbone's normalisation).

Not downloadable through torchvision: get http://cs231n.stanford.edu/tiny-imagenet-200.zip and extract it
under the data root.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tekapbench.data._files import CorruptDataError, missing_files
from tekapbench.data.base import DataOptions, ImageSplits, register_dataset
from tekapbench.data.cifar100 import MEAN as CIFAR100_MEAN, STD as CIFAR100_STD
from tekapbench.data.stl10 import resize_images
from tekapbench.errors import DataNotFoundError

FOLDER = "tiny-imagenet-200"
NUM_CLASSES = 200
SIZE = 32
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SUFFIXES = (".jpeg", ".jpg")

_FIX_CORRUPT = f"Delete the {FOLDER} folder and extract {URL} there again."


def _not_found_message(root: Path, missing: Path, download: bool) -> str:
    return (
        f"TinyImageNet not found: expected {missing}. "
        + ("It cannot be downloaded automatically (`download = true` does not apply to it). " if download else "")
        + f"Download {URL} (about 240 MB) and extract it into {root}, so that {root / FOLDER}/ holds "
        "wnids.txt, train/ and val/."
    )


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise CorruptDataError(
            f"TinyImageNet: {path} should list {NUM_CLASSES} distinct wnids, one a line; found {len(wnids)} "
            f"({len(set(wnids))} distinct). {_FIX_CORRUPT}"
        )
    return wnids


def _class_names(folder: Path, wnids: list[str]) -> tuple[str, ...]:
    path = folder / "words.txt"
    if not path.is_file():
        return tuple(wnids)
    words: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, name = line.partition("\t")
        if name.strip():
            words[wnid.strip()] = name.strip()
    return tuple(words.get(w, w) for w in wnids)


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        names = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
        if not names:
            raise CorruptDataError(
                f"TinyImageNet: no training images in {images} (class {label}, {wnid} in wnids.txt). "
                f"{_FIX_CORRUPT}"
            )
        files += names
        labels += [label] * len(names)
    return files, labels


def _val_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    path = folder / "val" / "val_annotations.txt"
    index = {wnid: i for i, wnid in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            raise CorruptDataError(
                f"TinyImageNet: {path} line {number}: expected '<file>\\t<wnid>\\tx0\\ty0\\tx1\\ty1' with a wnid "
                f"from wnids.txt, found {line!r}. {_FIX_CORRUPT}"
            )
        files.append(folder / "val" / "images" / fields[0].strip())
        labels.append(index[fields[1].strip()])
    if not files:
        raise CorruptDataError(f"TinyImageNet: {path} lists no validation images. {_FIX_CORRUPT}")
    return files, labels


def _decode(path: Path) -> torch.Tensor:
    """One JPEG -> uint8 (3, 32, 32)."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise CorruptDataError(f"TinyImageNet: {path} is missing. {_FIX_CORRUPT}") from None
    except Exception as exc:  # truncated or not an image
        raise CorruptDataError(
            f"TinyImageNet: cannot read {path} ({type(exc).__name__}: {exc}). {_FIX_CORRUPT}"
        ) from exc
    return resize_images(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None], SIZE)[0]


def _decode_all(files: list[Path], workers: int) -> torch.Tensor:
    if not files:
        return torch.zeros((0, 3, SIZE, SIZE), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return torch.stack(list(pool.map(_decode, files)))


def read_tinyimagenet(root: Path, workers: int | None = None, download_requested: bool = False) -> ImageSplits:
    """Read ``<root>/tiny-imagenet-200/`` (train and val), images resized to 32x32; errors name the file."""
    root = Path(root)
    folder = root / FOLDER
    if not folder.is_dir():
        missing = [folder]
    else:
        missing = missing_files(folder, ("wnids.txt",)) + (
            [] if (folder / "train").is_dir() else [folder / "train"]
        ) + missing_files(folder, ("val/val_annotations.txt",))
    if missing:
        raise DataNotFoundError(_not_found_message(root, missing[0], download_requested))
    wnids = _read_wnids(folder / "wnids.txt")
    train_files, train_labels = _train_files(folder, wnids)
    val_files, val_labels = _val_files(folder, wnids)
    workers = workers or min(8, os.cpu_count() or 1)
    return ImageSplits(
        name="tinyimagenet",
        train_images=_decode_all(train_files, workers),
        train_labels=torch.tensor(train_labels, dtype=torch.int64),
        test_images=_decode_all(val_files, workers),
        test_labels=torch.tensor(val_labels, dtype=torch.int64),
        num_classes=NUM_CLASSES,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        class_names=_class_names(folder, wnids),
    )


@register_dataset(
    "tinyimagenet",
    recipe="cifar100",
    num_classes=NUM_CLASSES,
    image_size=SIZE,
    description="TinyImageNet (100,000 train / 10,000 val as test, 200 classes) resized 64->32, for transfer "
    "probes; from <root>/tiny-imagenet-200/ (no download)",
)
def load_tinyimagenet(options: DataOptions) -> ImageSplits:
    return read_tinyimagenet(Path(options.root), download_requested=options.download)
