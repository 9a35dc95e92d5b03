"""Readers for the evaluation datasets: long-tailed CIFAR-100, STL-10, TinyImageNet (transfer) and CIFAR-100-C,
each against small fixtures written in the real on-disk format (see conftest.py); nothing is downloaded."""
from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tekapbench.data import DATASETS, CorruptDataError, DataOptions, load_dataset
from tekapbench.data import cifar100_lt
from tekapbench.data.cifar100c import CORRUPTIONS, available_corruptions, load_cifar100c
from tekapbench.data.cifar100_lt import long_tail_counts, long_tail_indices, shot_groups
from tekapbench.data.stl10 import read_stl10_images, resize_images
from tekapbench.errors import DataNotFoundError, UsageError

CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)


def pil_resize_32(rgb: np.ndarray) -> np.ndarray:
    """Reference: PIL's bilinear (antialiased) resize of an (H, W, 3) image to (3, 32, 32)."""
    return np.asarray(Image.fromarray(rgb).resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------------- CIFAR-100-LT


@pytest.mark.parametrize("name", ["cifar100_lt100", "cifar100_lt50", "cifar100_lt10"])
def test_long_tailed_datasets_are_registered(name):
    entry = DATASETS.get(name)
    assert entry.recipe == "cifar100" and entry.num_classes == 100 and entry.image_size == 32
    assert "long-tailed" in entry.description


@pytest.mark.parametrize("factor, total", [(0.01, 10_847), (0.02, 12_608), (0.1, 19_573)])
def test_long_tail_totals_match_ldam_drw(factor, total):
    counts = long_tail_counts(factor)
    assert len(counts) == 100 and sum(counts) == total
    assert counts[0] == 500 and counts[-1] == int(500 * factor)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


@pytest.mark.parametrize("factor, sizes", [(0.01, (35, 35, 30)), (0.1, (69, 31, 0))])
def test_long_tail_shot_groups(factor, sizes):
    groups = shot_groups(long_tail_counts(factor))
    assert tuple(len(groups[k]) for k in ("many", "medium", "few")) == sizes
    assert sorted(groups["many"] + groups["medium"] + groups["few"]) == list(range(100))


def test_long_tail_counts_formula_and_arguments():
    assert long_tail_counts(0.1, num_classes=3, max_per_class=10) == [10, 3, 1]
    assert long_tail_counts(1.0, num_classes=4, max_per_class=7) == [7] * 4
    for bad in (0, -0.5, 1.5, True):
        with pytest.raises(ValueError):
            long_tail_counts(bad)


def test_long_tail_selection_reproduces_ldam_drw_shuffle():
    """LDAM-DRW: np.random.seed(0), then per class np.random.shuffle(idx) and keep idx[:n]."""
    labels = np.tile(np.arange(100), 12)
    counts = long_tail_counts(0.1, max_per_class=12)
    np.random.seed(0)
    expected = []
    for c in range(100):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected.extend(idx[: counts[c]])
    assert long_tail_indices(labels, counts).tolist() == sorted(expected)


@pytest.fixture
def lt_fixture(tmp_path, make_cifar100, monkeypatch):
    """CIFAR-100 with 10 training images per class (labels (7i + 3) % 100 cover each class 10 times)."""
    monkeypatch.setattr(cifar100_lt, "MAX_PER_CLASS", 10)
    return make_cifar100(tmp_path, n_train=1000, n_test=30)


@pytest.mark.parametrize("name, factor", [("cifar100_lt100", 0.01), ("cifar100_lt50", 0.02), ("cifar100_lt10", 0.1)])
def test_long_tailed_split_counts_subset_and_untouched_test(lt_fixture, name, factor):
    splits = load_dataset(name, DataOptions(root=lt_fixture.root))
    counts = long_tail_counts(factor, max_per_class=10)
    assert splits.name == name and splits.num_classes == 100
    assert torch.bincount(splits.train_labels, minlength=100).tolist() == counts
    # every kept image is an original training image with its original label, in file order
    original = torch.from_numpy(lt_fixture.train_data.reshape(-1, 3, 32, 32))
    flat = {bytes(original[i].numpy().tobytes()): i for i in range(len(original))}
    kept = [flat[bytes(img.numpy().tobytes())] for img in splits.train_images]
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    assert [lt_fixture.train_labels[i] for i in kept] == splits.train_labels.tolist()
    # the test split is CIFAR-100's, unchanged
    assert torch.equal(splits.test_images, torch.from_numpy(lt_fixture.test_data.reshape(-1, 3, 32, 32)))
    assert splits.test_labels.tolist() == lt_fixture.test_labels
    assert splits.mean == CIFAR_MEAN and splits.std == CIFAR_STD
    assert splits.class_names == tuple(lt_fixture.fine_label_names)
    # deterministic
    again = load_dataset(name, DataOptions(root=lt_fixture.root))
    assert torch.equal(again.train_images, splits.train_images)
    assert torch.equal(again.train_labels, splits.train_labels)


def test_long_tailed_too_few_images_per_class_is_a_clear_error(tmp_path, make_cifar100):
    make_cifar100(tmp_path, n_train=200)  # 2 per class, but the real profile keeps up to 500
    with pytest.raises(CorruptDataError, match="500 images per class") as info:
        load_dataset("cifar100_lt100", DataOptions(root=tmp_path))
    assert isinstance(info.value, UsageError)


def test_long_tailed_missing_data_is_the_cifar100_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="CIFAR-100 not found") as info:
        load_dataset("cifar100_lt10", DataOptions(root=tmp_path))
    assert str(tmp_path / "cifar-100-python") in str(info.value)


# ----------------------------------------------------------------------------------------------- STL-10


def test_stl10_is_registered():
    entry = DATASETS.get("stl10")
    assert (entry.recipe, entry.num_classes, entry.image_size) == ("cifar100", 10, 32) and entry.description


def test_stl10_column_major_byte_lands_at_row_and_column(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros((2, 3, 96, 96), dtype=np.uint8)  # as stored: [n, channel, col, row]
    n, channel, row, col = 1, 2, 5, 70
    raw[n, channel, col, row] = 200
    path = folder / "train_X.bin"
    path.write_bytes(raw.tobytes())
    # the same byte by its file offset: channel planes of 96*96, column-major within a plane
    offset = n * 3 * 96 * 96 + channel * 96 * 96 + col * 96 + row
    assert path.read_bytes()[offset] == 200
    images = read_stl10_images(path)
    assert images.shape == (2, 3, 96, 96) and images.dtype == torch.uint8
    assert images[n, channel, row, col] == 200 and int(images.sum()) == 200


def test_stl10_block_stays_in_place_after_resize(tmp_path, make_stl10):
    images = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    images[0, 1, 15:18, 60:63] = 255  # rows 15..17, cols 60..62 -> output pixel (5, 20)
    make_stl10(tmp_path, train_images=images, n_test=1)
    splits = load_dataset("stl10", DataOptions(root=tmp_path))
    green = splits.train_images[0, 1]
    assert divmod(int(green.argmax()), 32) == (5, 20)
    assert int(splits.train_images[0, 0].sum()) == 0 and int(splits.train_images[0, 2].sum()) == 0


def test_stl10_reads_resized_images_labels_and_names(fake_stl10):
    splits = load_dataset("stl10", DataOptions(root=fake_stl10.root))
    assert splits.name == "stl10" and splits.num_classes == 10 and splits.image_size == 32
    assert splits.train_images.shape == (20, 3, 32, 32) and splits.test_images.shape == (10, 3, 32, 32)
    assert splits.train_images.dtype == torch.uint8 and splits.train_labels.dtype == torch.int64
    assert splits.train_labels.tolist() == (fake_stl10.train_labels.astype(int) - 1).tolist()
    assert splits.test_labels.tolist() == (fake_stl10.test_labels.astype(int) - 1).tolist()
    assert splits.train_labels.min() == 0 and splits.train_labels.max() == 9
    assert splits.class_names == tuple(fake_stl10.class_names)
    assert splits.mean == CIFAR_MEAN and splits.std == CIFAR_STD
    for split, images in (("train", fake_stl10.train_images), ("test", fake_stl10.test_images)):
        got = getattr(splits, f"{split}_images")
        expected = resize_images(torch.from_numpy(images), 32)
        assert torch.equal(got, expected)
        for i in (0, len(images) - 1):  # agrees with PIL's bilinear resize to within one grey level
            ref = pil_resize_32(images[i].transpose(1, 2, 0)).astype(int)
            assert np.abs(got[i].numpy().astype(int) - ref).max() <= 1


def test_resize_keeps_uniform_images_exact_and_checks_input():
    x = torch.full((3, 3, 96, 96), 37, dtype=torch.uint8)
    assert torch.equal(resize_images(x, 32, chunk=2), torch.full((3, 3, 32, 32), 37, dtype=torch.uint8))
    with pytest.raises(ValueError):
        resize_images(x.float(), 32)


def test_stl10_missing_folder_names_path_and_url(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("stl10", DataOptions(root=tmp_path))
    message = str(info.value)
    assert str(tmp_path / "stl10_binary" / "train_X.bin") in message
    assert "stl10_binary.tar.gz" in message and "download = true" in message
    assert info.value.exit_code == 2


def test_stl10_missing_label_file_is_named(fake_stl10):
    (fake_stl10.folder / "test_y.bin").unlink()
    with pytest.raises(DataNotFoundError, match="test_y.bin"):
        load_dataset("stl10", DataOptions(root=fake_stl10.root))


@pytest.mark.parametrize(
    "file, content, match",
    [
        ("train_X.bin", b"\x00" * 1000, "27648 per image"),
        ("train_y.bin", bytes([1] * 19), "19 labels for 20 images"),
        ("test_y.bin", bytes([0] * 10), r"labels must lie in 1\.\.10"),
        ("class_names.txt", b"airplane\nbird\n", "10 class names"),
    ],
)
def test_stl10_damaged_files_name_the_file(fake_stl10, file, content, match):
    (fake_stl10.folder / file).write_bytes(content)
    with pytest.raises(CorruptDataError, match=match) as info:
        load_dataset("stl10", DataOptions(root=fake_stl10.root))
    assert str(fake_stl10.folder / file) in str(info.value)


class _FakeTorchvisionStl10:
    calls: list[dict] = []
    action = None

    def __init__(self, root, split="train", download=False, **kwargs):
        type(self).calls.append({"root": root, "split": split, "download": download})
        type(self).action(root)


@pytest.fixture
def fake_torchvision_stl10(monkeypatch):
    monkeypatch.setattr(_FakeTorchvisionStl10, "calls", [])
    monkeypatch.setattr(torchvision.datasets, "STL10", _FakeTorchvisionStl10)
    return _FakeTorchvisionStl10


def test_stl10_download_goes_through_torchvision_then_our_reader(tmp_path, make_stl10, fake_torchvision_stl10):
    fake_torchvision_stl10.action = staticmethod(lambda root: make_stl10(root, n_train=3, n_test=2))
    splits = load_dataset("stl10", DataOptions(root=tmp_path, download=True))
    assert fake_torchvision_stl10.calls == [{"root": str(tmp_path), "split": "train", "download": True}]
    assert splits.train_images.shape == (3, 3, 32, 32) and splits.test_images.shape == (2, 3, 32, 32)


def test_stl10_present_folder_is_not_downloaded_again(fake_stl10, fake_torchvision_stl10):
    fake_torchvision_stl10.action = staticmethod(lambda root: pytest.fail("must not download"))
    load_dataset("stl10", DataOptions(root=fake_stl10.root, download=True))
    assert fake_torchvision_stl10.calls == []


def test_stl10_failed_download_is_a_usage_error(tmp_path, fake_torchvision_stl10):
    def no_network(root):
        raise urllib.error.URLError("Temporary failure in name resolution")

    fake_torchvision_stl10.action = staticmethod(no_network)
    with pytest.raises(DataNotFoundError, match="downloading into .* failed") as info:
        load_dataset("stl10", DataOptions(root=tmp_path, download=True))
    assert str(tmp_path / "stl10_binary") in str(info.value)


# ----------------------------------------------------------------------------------------------- TinyImageNet


def test_tinyimagenet_is_registered():
    entry = DATASETS.get("tinyimagenet")
    assert (entry.recipe, entry.num_classes, entry.image_size) == ("cifar100", 200, 32) and entry.description


@pytest.fixture(scope="module")
def tiny(module_tinyimagenet):
    return module_tinyimagenet, load_dataset("tinyimagenet", DataOptions(root=module_tinyimagenet.root))


def test_tinyimagenet_splits_labels_and_names(tiny):
    fake, splits = tiny
    assert splits.name == "tinyimagenet" and splits.num_classes == 200 and splits.image_size == 32
    assert splits.train_images.shape == (400, 3, 32, 32) and splits.test_images.shape == (12, 3, 32, 32)
    assert splits.train_images.dtype == torch.uint8 and splits.test_labels.dtype == torch.int64
    # class index = line of wnids.txt (which is not sorted), train class by class
    assert fake.wnids != sorted(fake.wnids)
    assert splits.train_labels.tolist() == fake.train_labels == [c for c in range(200) for _ in range(2)]
    # val labels come from val_annotations.txt
    assert splits.test_labels.tolist() == fake.val_labels == [(37 * k + 11) % 200 for k in range(12)]
    assert splits.class_names == tuple(fake.words[w] for w in fake.wnids)
    assert splits.mean == CIFAR_MEAN and splits.std == CIFAR_STD


def test_tinyimagenet_pixels_are_decoded_rgb_resized_like_stl10(tiny):
    fake, splits = tiny
    for got, rgbs in ((splits.train_images, fake.train_rgb), (splits.test_images, fake.val_rgb)):
        expected = resize_images(torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous(), 32)
        assert torch.equal(got, expected)
        for i in (0, 1, len(rgbs) - 1):
            assert np.abs(got[i].numpy().astype(int) - pil_resize_32(rgbs[i]).astype(int)).max() <= 1


def test_tinyimagenet_grayscale_jpegs_become_three_equal_channels(tiny):
    fake, splits = tiny
    with Image.open(fake.train_files[fake.grayscale_train_index]) as image:
        assert image.mode == "L"
    for img in (splits.train_images[fake.grayscale_train_index], splits.test_images[fake.grayscale_val_index]):
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    colour = splits.train_images[2]
    assert not torch.equal(colour[0], colour[1])


def test_tinyimagenet_without_words_uses_wnids(tmp_path, make_tinyimagenet):
    fake = make_tinyimagenet(tmp_path, n_val=2, words=False)
    splits = load_dataset("tinyimagenet", DataOptions(root=tmp_path))
    assert splits.class_names == tuple(fake.wnids)


@pytest.mark.parametrize("download", [False, True])
def test_tinyimagenet_missing_folder_says_where_to_get_it(tmp_path, download):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("tinyimagenet", DataOptions(root=tmp_path, download=download))
    message = str(info.value)
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message and str(tmp_path) in message
    assert ("cannot be downloaded automatically" in message) == download
    assert info.value.exit_code == 2


def test_tinyimagenet_missing_and_damaged_files_are_named(tmp_path, make_tinyimagenet):
    fake = make_tinyimagenet(tmp_path, n_val=3)
    options = DataOptions(root=tmp_path)

    broken = fake.val_files[2]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated JPEG
    with pytest.raises(CorruptDataError) as info:
        load_dataset("tinyimagenet", options)
    assert str(broken) in str(info.value)

    broken.unlink()
    with pytest.raises(CorruptDataError, match="missing") as info:
        load_dataset("tinyimagenet", options)
    assert str(broken) in str(info.value)

    annotations = fake.folder / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn12345678\t0\t0\t1\t1\n")
    with pytest.raises(CorruptDataError, match="line 1") as info:
        load_dataset("tinyimagenet", options)
    assert str(annotations) in str(info.value)

    (fake.folder / "wnids.txt").write_text("n01\nn02\n")
    with pytest.raises(CorruptDataError, match="200 distinct wnids"):
        load_dataset("tinyimagenet", options)

    (fake.folder / "wnids.txt").unlink()
    with pytest.raises(DataNotFoundError, match="wnids.txt") as info:
        load_dataset("tinyimagenet", options)
    assert str(fake.folder / "wnids.txt") in str(info.value)


def test_tinyimagenet_empty_class_folder_is_named(tmp_path, make_tinyimagenet):
    fake = make_tinyimagenet(tmp_path, n_val=1)
    images = fake.folder / "train" / fake.wnids[3] / "images"
    for path in images.iterdir():
        path.unlink()
    with pytest.raises(CorruptDataError, match="no training images") as info:
        load_dataset("tinyimagenet", DataOptions(root=tmp_path))
    assert str(images) in str(info.value)


# ----------------------------------------------------------------------------------------------- CIFAR-100-C


def test_cifar100c_is_not_a_training_dataset():
    assert not any("cifar100c" in name or "cifar100_c" in name for name in DATASETS.names())


def test_cifar100c_has_the_15_standard_corruptions():
    assert len(CORRUPTIONS) == 15 == len(set(CORRUPTIONS))
    assert {"gaussian_noise", "jpeg_compression", "elastic_transform", "frost"} <= set(CORRUPTIONS)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_cifar100c_severity_selects_its_rows(fake_cifar100c, severity):
    images, labels = load_cifar100c(fake_cifar100c.root, "fog", severity)
    n = fake_cifar100c.per_severity
    rows = slice((severity - 1) * n, severity * n)
    assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(fake_cifar100c.images["fog"][rows]).permute(0, 3, 1, 2))
    assert labels.tolist() == fake_cifar100c.labels[rows].tolist() == [(11 * i + 5) % 100 for i in range(n)]
    assert (images[:, 0, 0, 0] == severity).all()


def test_cifar100c_available_corruptions_lists_present_files(fake_cifar100c, tmp_path):
    assert available_corruptions(fake_cifar100c.root) == ["gaussian_noise", "fog"]  # CORRUPTIONS order
    assert available_corruptions(tmp_path / "elsewhere") == []


def test_cifar100c_missing_folder_and_file_name_the_path(fake_cifar100c, tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_cifar100c(tmp_path / "elsewhere", "fog", 1)
    assert str(tmp_path / "elsewhere" / "CIFAR-100-C") in str(info.value)
    assert "https://zenodo.org/record/3555552" in str(info.value)
    with pytest.raises(DataNotFoundError) as info:
        load_cifar100c(fake_cifar100c.root, "snow", 1)
    assert str(fake_cifar100c.folder / "snow.npy") in str(info.value) and "zenodo" in str(info.value)
    (fake_cifar100c.folder / "labels.npy").unlink()
    with pytest.raises(DataNotFoundError, match="labels.npy"):
        load_cifar100c(fake_cifar100c.root, "fog", 1)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((10, 32, 32, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 3, 32, 32), dtype=np.uint8), r"\(10, 3, 32, 32\)"),
        (np.zeros((12, 32, 32, 3), dtype=np.uint8), "multiple of 5"),
    ],
)
def test_cifar100c_wrong_shape_names_the_file(fake_cifar100c, array, match):
    path = fake_cifar100c.folder / "fog.npy"
    np.save(path, array)
    with pytest.raises(CorruptDataError, match=match) as info:
        load_cifar100c(fake_cifar100c.root, "fog", 1)
    assert str(path) in str(info.value)


def test_cifar100c_bad_labels_and_truncated_file_name_the_file(fake_cifar100c):
    labels = fake_cifar100c.folder / "labels.npy"
    np.save(labels, np.zeros(7, dtype=np.int64))
    with pytest.raises(CorruptDataError, match="20 integer labels") as info:
        load_cifar100c(fake_cifar100c.root, "fog", 1)
    assert str(labels) in str(info.value)
    path = fake_cifar100c.folder / "gaussian_noise.npy"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CorruptDataError, match="corrupt or incomplete") as info:
        load_cifar100c(fake_cifar100c.root, "gaussian_noise", 1)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("corruption, severity", [("fogg", 1), ("fog", 0), ("fog", 6), ("fog", True), ("fog", 2.0)])
def test_cifar100c_rejects_unknown_corruption_and_severity(fake_cifar100c, corruption, severity):
    with pytest.raises(UsageError):
        load_cifar100c(fake_cifar100c.root, corruption, severity)
