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


# ----------------------------------------------------------------------------------------------- STL-10

STL10_CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


@dataclass(frozen=True)
class FakeStl10:
    """What :func:`write_stl10` put on disk; images in image (row-major) order, labels as stored (1..10)."""

    root: Path  # the folder that contains stl10_binary/
    train_images: np.ndarray  # uint8 (N, 3, 96, 96), [n, channel, row, col]
    train_labels: np.ndarray  # uint8 (N,), 1..10
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]

    @property
    def folder(self) -> Path:
        return self.root / "stl10_binary"


def write_stl10(
    root: Path,
    n_train: int = 20,
    n_test: int = 10,
    seed: int = 0,
    train_images: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
) -> FakeStl10:
    """Write ``root/stl10_binary/`` as the real archive does: ``{train,test}_X.bin`` raw uint8 N x 3 x 96 x 96
    with each channel plane stored column-major, ``{train,test}_y.bin`` uint8 labels 1..10, class_names.txt.

    Pixels are random (seeded) unless given (uint8 (N, 3, 96, 96), row-major); labels are ``i % 10 + 1``
    for train and ``(3 * i) % 10 + 1`` for test.
    """
    rng = np.random.default_rng(seed)
    if train_images is None:
        train_images = rng.integers(0, 256, size=(n_train, 3, 96, 96), dtype=np.uint8)
    if test_images is None:
        test_images = rng.integers(0, 256, size=(n_test, 3, 96, 96), dtype=np.uint8)
    train_labels = np.array([i % 10 + 1 for i in range(len(train_images))], dtype=np.uint8)
    test_labels = np.array([(3 * i) % 10 + 1 for i in range(len(test_images))], dtype=np.uint8)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        # column-major planes: byte (n, c, col, row) = pixel [n, c, row, col]
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASS_NAMES) + "\n")
    return FakeStl10(Path(root), train_images, train_labels, test_images, test_labels, list(STL10_CLASS_NAMES))


@pytest.fixture
def make_stl10():
    """Factory: ``make_stl10(root, n_train=20, n_test=10, seed=0, train_images=None, test_images=None)``."""
    return write_stl10


@pytest.fixture
def fake_stl10(tmp_path: Path) -> FakeStl10:
    """A tiny STL-10 (20 train, 10 test images of 96x96) under ``tmp_path``."""
    return write_stl10(tmp_path)


# ----------------------------------------------------------------------------------------------- TinyImageNet


@dataclass(frozen=True)
class FakeTinyImageNet:
    """What :func:`write_tinyimagenet` put on disk, with each JPEG's pixels as Pillow decodes them (RGB)."""

    root: Path  # the folder that contains tiny-imagenet-200/
    wnids: list[str]  # in wnids.txt order (not sorted): class index = position
    words: dict[str, str]  # wnid -> name, for the classes
    train_files: list[Path]  # in reading order: class by class, sorted file names within a class
    train_labels: list[int]
    train_rgb: list[np.ndarray]  # uint8 (64, 64, 3) each
    val_files: list[Path]  # in val_annotations.txt order
    val_labels: list[int]
    val_rgb: list[np.ndarray]
    grayscale_train_index: int  # a training image stored as a one-channel JPEG
    grayscale_val_index: int

    @property
    def folder(self) -> Path:
        return self.root / "tiny-imagenet-200"


def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A uint8 (size, size, 3) image with structure (a gradient plus a block), which JPEG keeps reasonably."""
    y, x = np.mgrid[0:size, 0:size]
    base = rng.integers(0, 256, size=3)
    img = (base + 2 * x[..., None] + y[..., None]) % 256
    r0, c0 = rng.integers(0, size // 2, size=2)
    img[r0:r0 + size // 4, c0:c0 + size // 3] = rng.integers(0, 256, size=3)
    return img.astype(np.uint8)


def _save_jpeg(path: Path, rgb: np.ndarray, grayscale: bool) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(rgb).convert("L") if grayscale else Image.fromarray(rgb)
    image.save(path, format="JPEG", quality=90)
    with Image.open(path) as stored:
        assert stored.mode == ("L" if grayscale else "RGB")
        return np.asarray(stored.convert("RGB"))


def write_tinyimagenet(
    root: Path, train_per_class: int = 1, n_val: int = 10, seed: int = 0, size: int = 64, words: bool = True
) -> FakeTinyImageNet:
    """Write ``root/tiny-imagenet-200/`` as the real zip does, with 200 classes but few images: wnids.txt
    (200 ids, deliberately not sorted), words.txt (the classes plus unrelated WordNet lines, unless
    ``words=False``), ``train/<wnid>/images/<wnid>_<k>.JPEG`` plus ``<wnid>_boxes.txt``,
    ``val/images/val_<k>.JPEG`` with ``val/val_annotations.txt`` (tab-separated file, wnid, box), and an
    unlabelled ``test/images/``. Training image 0 of class 0 and validation image 1 are grayscale JPEGs.
    Val image k belongs to class ``(37 * k + 11) % 200``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{(k * 7919 + 1234) % 100000:08d}" for k in range(200)]
    names = {w: f"thing {k}, Genus species{k}" for k, w in enumerate(wnids)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    if words:
        lines = ["n00001740\tentity", *(f"{w}\t{names[w]}" for w in wnids), "n99999999\tsomething else"]
        (folder / "words.txt").write_text("\n".join(lines) + "\n")
    train_files, train_labels, train_rgb = [], [], []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            "".join(f"{wnid}_{k}.JPEG\t0\t0\t63\t63\n" for k in range(train_per_class)))
        files = sorted(images / f"{wnid}_{k}.JPEG" for k in range(train_per_class))
        for path in files:
            gray = label == 0 and path.name == f"{wnid}_0.JPEG"
            train_rgb.append(_save_jpeg(path, _smooth_image(rng, size), gray))
            train_files.append(path)
            train_labels.append(label)
    (folder / "val" / "images").mkdir(parents=True)
    val_files, val_labels, val_rgb, rows = [], [], [], []
    for k in range(n_val):
        label = (37 * k + 11) % 200
        path = folder / "val" / "images" / f"val_{k}.JPEG"
        val_rgb.append(_save_jpeg(path, _smooth_image(rng, size), grayscale=k == 1))
        val_files.append(path)
        val_labels.append(label)
        rows.append(f"val_{k}.JPEG\t{wnids[label]}\t{k % 7}\t3\t50\t60")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    (folder / "test" / "images").mkdir(parents=True)
    _save_jpeg(folder / "test" / "images" / "test_0.JPEG", _smooth_image(rng, size), grayscale=False)
    return FakeTinyImageNet(Path(root), wnids, {w: names[w] for w in wnids}, train_files, train_labels,
                            train_rgb, val_files, val_labels, val_rgb, 0, 1)


@pytest.fixture
def make_tinyimagenet():
    """Factory: ``make_tinyimagenet(root, train_per_class=1, n_val=10, seed=0, size=64, words=True)``."""
    return write_tinyimagenet


@pytest.fixture
def fake_tinyimagenet(tmp_path: Path) -> FakeTinyImageNet:
    """A tiny TinyImageNet (200 classes, 1 training image each, 10 validation images) under ``tmp_path``."""
    return write_tinyimagenet(tmp_path)


@pytest.fixture(scope="module")
def module_tinyimagenet(tmp_path_factory) -> FakeTinyImageNet:
    """A TinyImageNet with 2 training images per class and 12 validation images, written once per test
    module (read-only: tests that damage files use ``make_tinyimagenet`` on their own ``tmp_path``)."""
    return write_tinyimagenet(tmp_path_factory.mktemp("tinyimagenet"), train_per_class=2, n_val=12)


# ----------------------------------------------------------------------------------------------- CIFAR-100-C


@dataclass(frozen=True)
class FakeCifar100C:
    """What :func:`write_cifar100c` put on disk."""

    root: Path  # the folder that contains CIFAR-100-C/
    images: dict[str, np.ndarray]  # corruption -> uint8 (5 * per_severity, 32, 32, 3), channels last
    labels: np.ndarray  # int64 (5 * per_severity,): the same per_severity labels repeated 5 times
    per_severity: int

    @property
    def folder(self) -> Path:
        return self.root / "CIFAR-100-C"


def write_cifar100c(
    root: Path, corruptions: tuple[str, ...] = ("gaussian_noise", "fog"), per_severity: int = 4, seed: int = 0
) -> FakeCifar100C:
    """Write ``root/CIFAR-100-C/<corruption>.npy`` (uint8 (5 * per_severity, 32, 32, 3): severity 1's rows,
    then 2's, ...) and ``labels.npy`` (int64, test labels ``(11 * i + 5) % 100`` repeated 5 times), as
    ``np.save`` writes the real release (which has per_severity = 10,000). Pixel [row, col, channel] of
    image i of severity s is random, except that channel 0 of pixel (0, 0) holds ``s`` so tests can tell
    severities apart."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "CIFAR-100-C"
    folder.mkdir(parents=True, exist_ok=True)
    base_labels = np.array([(11 * i + 5) % 100 for i in range(per_severity)], dtype=np.int64)
    labels = np.tile(base_labels, 5)
    np.save(folder / "labels.npy", labels)
    images = {}
    for name in corruptions:
        data = rng.integers(0, 256, size=(5 * per_severity, 32, 32, 3), dtype=np.uint8)
        data[:, 0, 0, 0] = np.repeat(np.arange(1, 6), per_severity)
        np.save(folder / f"{name}.npy", data)
        images[name] = data
    return FakeCifar100C(Path(root), images, labels, per_severity)


@pytest.fixture
def make_cifar100c():
    """Factory: ``make_cifar100c(root, corruptions=("gaussian_noise", "fog"), per_severity=4, seed=0)``."""
    return write_cifar100c


@pytest.fixture
def fake_cifar100c(tmp_path: Path) -> FakeCifar100C:
    """A tiny CIFAR-100-C (gaussian_noise and fog, 4 images per severity) under ``tmp_path``."""
    return write_cifar100c(tmp_path)
