"""Shared fixtures: tiny datasets written in the exact on-disk formats, so no test downloads anything.

Pattern for a new dataset format: a plain ``write_<format>(root, ...)`` function that writes the files and
returns what it wrote (so tests can compare pixel by pixel), a factory fixture exposing it, and a
``<dataset>_root`` fixture with small defaults.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class FakeCifar100:
    """What :func:`write_cifar100` put on disk, in the on-disk layout."""

    root: Path  # the folder that contains cifar-100-python/
    train_data: np.ndarray  # uint8 (N, 3072): R plane, G plane, B plane, each 32x32 row-major
    train_labels: list[int]
    test_data: np.ndarray
    test_labels: list[int]
    fine_label_names: list[str]

    @property
    def folder(self) -> Path:
        return self.root / "cifar-100-python"


def _cifar_split(data: np.ndarray, labels: list[int], name: str) -> dict:
    n = len(labels)
    return {
        "filenames": [f"{name}_{i:05d}.png" for i in range(n)],
        "batch_label": f"{name} batch 1 of 1",
        "fine_labels": list(labels),
        "coarse_labels": [label // 5 for label in labels],
        "data": data,
    }


def write_cifar100(
    root: Path,
    n_train: int = 20,
    n_test: int = 10,
    seed: int = 0,
    train_data: np.ndarray | None = None,
    test_data: np.ndarray | None = None,
) -> FakeCifar100:
    """Write ``root/cifar-100-python/{train,test,meta}`` as the real archive does (pickle protocol 2).

    Pixel values are random (seeded) unless ``train_data``/``test_data`` (uint8 N x 3072) are given; labels
    are ``(7 * i + 3) % 100`` for train and ``(11 * i + 5) % 100`` for test.
    """
    rng = np.random.default_rng(seed)
    if train_data is None:
        train_data = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    if test_data is None:
        test_data = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    train_labels = [(7 * i + 3) % 100 for i in range(len(train_data))]
    test_labels = [(11 * i + 5) % 100 for i in range(len(test_data))]
    fine_names = [f"fine_{k:02d}" for k in range(100)]
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train": _cifar_split(train_data, train_labels, "training"),
        "test": _cifar_split(test_data, test_labels, "testing"),
        "meta": {"fine_label_names": fine_names, "coarse_label_names": [f"coarse_{k:02d}" for k in range(20)]},
    }
    for name, obj in contents.items():
        with (folder / name).open("wb") as f:
            pickle.dump(obj, f, protocol=2)
    return FakeCifar100(Path(root), train_data, train_labels, test_data, test_labels, fine_names)


@pytest.fixture
def make_cifar100():
    """Factory: ``make_cifar100(root, n_train=20, n_test=10, seed=0, train_data=None, test_data=None)``."""
    return write_cifar100


@pytest.fixture
def fake_cifar100(tmp_path: Path) -> FakeCifar100:
    """A tiny CIFAR-100 (20 train, 10 test images) under ``tmp_path``, with what was written."""
    return write_cifar100(tmp_path)


@pytest.fixture
def cifar100_root(fake_cifar100: FakeCifar100) -> Path:
    """The root folder of a tiny CIFAR-100 (pass it as ``DataOptions(root=...)``)."""
    return fake_cifar100.root
