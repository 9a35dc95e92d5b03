"""CIFAR-100-C (Hendrycks & Dietterich, 2019): the CIFAR-100 test set under 15 corruptions x 5 severities.

An evaluation set, not a registered training dataset: :func:`load_cifar100c` returns one (corruption,
severity) slice of test images and labels; the benchmark reports the mean accuracy over the 15 standard
corruptions (:data:`CORRUPTIONS`) and 5 severities.

On-disk format (``<root>/CIFAR-100-C/``, the extracted ``CIFAR-100-C.tar`` from https://zenodo.org/record/3555552):

- ``<corruption>.npy``: uint8 (50000, 32, 32, 3), channels last: severity 1's 10,000 images, then severity
  2's, ... up to 5, each block in CIFAR-100 test-set order;
- ``labels.npy``: (50000,) integer labels 0..99, the test labels repeated 5 times.

The reader accepts any number of rows N divisible by 5 (N / 5 images per severity; 10,000 in the real files)
so that tests can use small fixtures. Files are opened with ``np.load(mmap_mode='r')``, so only the requested
severity's rows are read from disk. The release also has 4 extra corruptions (speckle_noise, gaussian_blur,
spatter, saturate; :data:`EXTRA_CORRUPTIONS`), readable here but not part of the standard mean.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tekapbench.data._files import CorruptDataError
from tekapbench.errors import DataNotFoundError, UsageError

FOLDER = "CIFAR-100-C"
URL = "https://zenodo.org/record/3555552"
SEVERITIES = (1, 2, 3, 4, 5)
SIZE = 32
NUM_CLASSES = 100
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

_FIX_CORRUPT = f"Delete the {FOLDER} folder and extract CIFAR-100-C.tar from {URL} there again."


def _folder_message(root: Path, missing: Path) -> str:
    return (
        f"CIFAR-100-C not found: expected {missing}. Download CIFAR-100-C.tar from {URL} (about 2.9 GB) and "
        f"extract it into {root}, so that {root / FOLDER}/ holds labels.npy and one <corruption>.npy per "
        "corruption. It is never downloaded automatically."
    )


def available_corruptions(root: Path) -> list[str]:
    """The known corruptions (standard 15 first, in :data:`CORRUPTIONS` order, then the extras) whose
    ``.npy`` file is present under ``<root>/CIFAR-100-C/``; empty if the folder is absent."""
    folder = Path(root) / FOLDER
    return [name for name in CORRUPTIONS + EXTRA_CORRUPTIONS if (folder / f"{name}.npy").is_file()]


def _open(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated, not a .npy, an object array
        raise CorruptDataError(
            f"CIFAR-100-C: cannot read {path}: the file is corrupt or incomplete ({type(exc).__name__}: {exc}). "
            f"{_FIX_CORRUPT}"
        ) from exc


def load_cifar100c(root: Path, corruption: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images uint8 (N/5, 3, 32, 32) and labels int64 (N/5,) of one corruption at one severity (1..5).

    With the real files, N/5 = 10,000 and the images are the CIFAR-100 test set in order, corrupted.
    """
    if corruption not in CORRUPTIONS + EXTRA_CORRUPTIONS:
        raise UsageError(
            f"CIFAR-100-C: unknown corruption {corruption!r}; allowed: {', '.join(CORRUPTIONS)} "
            f"(and the extras {', '.join(EXTRA_CORRUPTIONS)})"
        )
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise UsageError(f"CIFAR-100-C: severity must be an integer 1..5, got {severity!r}")
    root = Path(root)
    folder = root / FOLDER
    if not folder.is_dir():
        raise DataNotFoundError(_folder_message(root, folder))
    image_path, label_path = folder / f"{corruption}.npy", folder / "labels.npy"
    for path in (image_path, label_path):
        if not path.is_file():
            raise DataNotFoundError(_folder_message(root, path))

    images = _open(image_path)
    n = images.shape[0] if images.ndim else 0
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3) or n == 0 or n % 5:
        raise CorruptDataError(
            f"CIFAR-100-C: {image_path} should be uint8 of shape (N, {SIZE}, {SIZE}, 3) with N a positive "
            f"multiple of 5 (50000 in the release), found {images.dtype} {tuple(images.shape)}. {_FIX_CORRUPT}"
        )
    labels = _open(label_path)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise CorruptDataError(
            f"CIFAR-100-C: {label_path} should hold {n} integer labels (one per row of {image_path.name}), "
            f"found {labels.dtype} {tuple(labels.shape)}. {_FIX_CORRUPT}"
        )

    per_severity = n // 5
    rows = slice((int(severity) - 1) * per_severity, int(severity) * per_severity)
    label_slice = np.array(labels[rows], dtype=np.int64, copy=True)  # off the memory map
    if label_slice.min() < 0 or label_slice.max() >= NUM_CLASSES:
        raise CorruptDataError(
            f"CIFAR-100-C: {label_path}: labels must lie in 0..{NUM_CLASSES - 1}, found "
            f"{label_slice.min()}..{label_slice.max()}. {_FIX_CORRUPT}"
        )
    # (n, H, W, C) channels-last -> (n, C, H, W); the copy reads just these rows from the memory map.
    chw = np.array(images[rows].transpose(0, 3, 1, 2), order="C", copy=True)
    return torch.from_numpy(chw), torch.from_numpy(label_slice)
