"""STL-10 from the standard ``stl10_binary/`` folder (the extracted ``stl10_binary.tar.gz``), resized to 32x32.

Used for the transfer protocol (CRD): a CIFAR-100-trained backbone is frozen and a linear classifier is
trained on its features, so images are brought to the 32x32 the backbone was trained on.

On-disk format: ``train_X.bin`` / ``test_X.bin`` are raw uint8, N x 3 x 96 x 96, each channel plane stored
**column-major** (so a plane read as 96x96 in C order is the transposed image); ``train_y.bin`` /
``test_y.bin`` are uint8 labels 1..10 (mapped here to 0..9); ``class_names.txt`` has one name per line.
``unlabeled_X.bin`` (100,000 images) is not read. Real sizes: 5,000 train and 8,000 test images.

Resizing 96 -> 32 (:func:`resize_images`): ``torch.nn.functional.interpolate`` in float, bilinear with
``antialias=True``, then rounded back to uint8. Without antialiasing, a 3x bilinear reduction reads only
2x2 of the 3x3 source pixels behind each output pixel (aliasing, and a third of the image ignored); with it
the filter widens to cover the whole footprint, which is what PIL's ``Image.resize(..., BILINEAR)`` (and so
torchvision's ``Resize`` on PIL images, as CRD's transfer code uses) computes: the results agree with PIL to
within 1 grey level. Rounding (rather than truncating) keeps a uniform image exactly uniform. The
TinyImageNet reader uses the same function.

``mean``/``std`` are CIFAR-100's constants, not STL-10's: the frozen backbone was trained on CIFAR-100 images
normalised with them, and its features are only meaningful for inputs normalised the same way.

Our own reader, not torchvision's ``STL10``: that class checks MD5 sums, which the tests' small fixtures in the
same format would fail. torchvision is only used to download (and verify) the real archive when allowed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tekapbench.data._files import CorruptDataError, missing_files
from tekapbench.data.base import DataOptions, ImageSplits, register_dataset
from tekapbench.data.cifar100 import MEAN as CIFAR100_MEAN, STD as CIFAR100_STD
from tekapbench.errors import DataNotFoundError

FOLDER = "stl10_binary"
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
NUM_CLASSES = 10
SOURCE_SIZE = 96
SIZE = 32
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"

_FIX_CORRUPT = (
    "Delete the stl10_binary folder and download it again (suite option `download = true` in the [data] "
    f"table) or extract {URL} there again."
)


def resize_images(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): bilinear with antialiasing in float32, rounded.

    Works ``chunk`` images at a time so the float copy stays small (8,000 STL-10 images in float32 at 96x96
    would take 0.9 GB at once).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to(torch.float32)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _not_found_message(root: Path, missing: list[Path]) -> str:
    folder = root / FOLDER
    return (
        f"STL-10 not found: expected {missing[0]}"
        + (f" (also missing: {', '.join(p.name for p in missing[1:])})" if len(missing) > 1 else "")
        + f". Either set `download = true` in the suite's [data] table to download it (about 2.6 GB) into "
        f"{root}, or download {URL} yourself and extract it so that {folder}/ holds "
        f"{', '.join(FILES)}."
    )


def _download(root: Path) -> None:
    import torchvision  # only needed here; keeps `import tekapbench.data` light

    try:
        torchvision.datasets.STL10(root=str(root), split="train", download=True)
    except Exception as exc:  # no network, checksum mismatch, disk full: one readable message
        raise DataNotFoundError(
            f"STL-10: downloading into {root} failed ({type(exc).__name__}: {exc}). Without network access, "
            f"download {URL} elsewhere and extract it so that {root / FOLDER}/ holds {', '.join(FILES)}."
        ) from exc


def read_stl10_images(path: Path) -> torch.Tensor:
    """``*_X.bin`` -> uint8 (N, 3, 96, 96) in row-major (image) order, not resized."""
    plane = 3 * SOURCE_SIZE * SOURCE_SIZE
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % plane:
        raise CorruptDataError(
            f"STL-10: {path} should hold N x 3 x {SOURCE_SIZE} x {SOURCE_SIZE} bytes ({plane} per image), "
            f"found {data.size} bytes. {_FIX_CORRUPT}"
        )
    # (N, 3, col, row) as stored; swap the last two axes to get (N, 3, row, col).
    images = data.reshape(-1, 3, SOURCE_SIZE, SOURCE_SIZE).transpose(0, 1, 3, 2)
    return torch.from_numpy(np.ascontiguousarray(images))


def read_stl10_labels(path: Path, count: int) -> torch.Tensor:
    """``*_y.bin`` (uint8 1..10) -> int64 0..9; there must be ``count`` of them."""
    labels = np.fromfile(path, dtype=np.uint8)
    if labels.size != count:
        raise CorruptDataError(f"STL-10: {path} holds {labels.size} labels for {count} images. {_FIX_CORRUPT}")
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise CorruptDataError(
            f"STL-10: {path}: labels must lie in 1..{NUM_CLASSES}, found {labels.min()}..{labels.max()}. "
            f"{_FIX_CORRUPT}"
        )
    return torch.from_numpy(labels.astype(np.int64) - 1)


def _class_names(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if len(names) != NUM_CLASSES:
        raise CorruptDataError(
            f"STL-10: {path} should list {NUM_CLASSES} class names, one a line; found {len(names)}. "
            f"{_FIX_CORRUPT}"
        )
    return names


def _split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_stl10_images(folder / f"{split}_X.bin")
    labels = read_stl10_labels(folder / f"{split}_y.bin", images.shape[0])
    return resize_images(images, SIZE), labels


def read_stl10(root: Path) -> ImageSplits:
    """Read ``<root>/stl10_binary/`` (no download), images resized to 32x32; errors name the file."""
    folder = Path(root) / FOLDER
    missing = missing_files(folder, FILES)
    if missing:
        raise DataNotFoundError(_not_found_message(Path(root), missing))
    class_names = _class_names(folder / "class_names.txt")
    train_images, train_labels = _split(folder, "train")
    test_images, test_labels = _split(folder, "test")
    return ImageSplits(
        name="stl10",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=NUM_CLASSES,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        class_names=class_names,
    )


@register_dataset(
    "stl10",
    recipe="cifar100",
    num_classes=NUM_CLASSES,
    image_size=SIZE,
    description="STL-10 (5,000 train / 8,000 test, 10 classes) resized 96->32, for transfer probes; "
    "from <root>/stl10_binary/",
)
def load_stl10(options: DataOptions) -> ImageSplits:
    root = Path(options.root)
    if options.download and missing_files(root / FOLDER, FILES):
        _download(root)
    return read_stl10(root)
