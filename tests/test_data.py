"""Dataset readers (CIFAR-100 format, bundled digits) and the on-device loader."""
from __future__ import annotations

import dataclasses
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from tekapbench.data import (
    DATASETS,
    Batch,
    CorruptDataError,
    DataOptions,
    DeviceLoader,
    ImageSplits,
    load_dataset,
)
from tekapbench.data.loader import draw_epoch_plan
from tekapbench.errors import DataNotFoundError, UsageError

CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


# ----------------------------------------------------------------------------------------------- registry


def test_registry_lists_both_datasets_with_recipes():
    assert {"cifar100", "digits"} <= set(DATASETS.names())
    assert DATASETS.get("cifar100").recipe == "cifar100"
    assert DATASETS.get("digits").recipe == "digits"
    assert DATASETS.get("cifar100").description and DATASETS.get("digits").description


# ----------------------------------------------------------------------------------------------- CIFAR-100


def test_cifar100_reads_splits_labels_and_names(fake_cifar100):
    splits = load_dataset("cifar100", DataOptions(root=fake_cifar100.root))
    assert isinstance(splits, ImageSplits)
    assert splits.name == "cifar100"
    assert splits.train_images.shape == (20, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert splits.test_images.shape == (10, 3, 32, 32) and splits.test_images.dtype == torch.uint8
    assert splits.train_labels.dtype == torch.int64 and splits.test_labels.dtype == torch.int64
    assert splits.train_labels.tolist() == fake_cifar100.train_labels
    assert splits.test_labels.tolist() == fake_cifar100.test_labels
    assert splits.num_classes == 100 and splits.image_size == 32
    assert splits.mean == CIFAR_MEAN and splits.std == CIFAR_STD
    assert splits.class_names == tuple(fake_cifar100.fine_label_names)


def test_cifar100_pixel_layout_matches_the_format_definition(fake_cifar100):
    """tensor[i, c, r, col] == data[i, c * 1024 + r * 32 + col] (planes R, G, B; each row-major)."""
    splits = load_dataset("cifar100", DataOptions(root=fake_cifar100.root))
    for data, images in ((fake_cifar100.train_data, splits.train_images), (fake_cifar100.test_data, splits.test_images)):
        i, c, r, col = np.indices(images.shape)
        expected = data[i, c * 1024 + r * 32 + col]
        assert np.array_equal(images.numpy(), expected)


def test_cifar100_marker_pixels_land_at_channel_row_column(tmp_path, make_cifar100):
    data = np.zeros((4, 3072), dtype=np.uint8)
    data[3, 0 * 1024 + 2 * 32 + 5] = 200  # R plane, row 2, column 5
    data[3, 1 * 1024 + 30 * 32 + 1] = 100  # G plane, row 30, column 1
    data[1, 2 * 1024 + 0 * 32 + 31] = 50  # B plane, row 0, column 31
    make_cifar100(tmp_path, train_data=data)
    images = load_dataset("cifar100", DataOptions(root=tmp_path)).train_images
    assert images.nonzero().tolist() == [[1, 2, 0, 31], [3, 0, 2, 5], [3, 1, 30, 1]]
    assert images[3, 0, 2, 5] == 200 and images[3, 1, 30, 1] == 100 and images[1, 2, 0, 31] == 50


def test_cifar100_missing_folder_names_the_path_and_the_download_option(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar100", DataOptions(root=tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-100-python" / "train") in message
    assert "download = true" in message and "[data]" in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_cifar100_missing_single_file_is_named(fake_cifar100):
    (fake_cifar100.folder / "test").unlink()
    with pytest.raises(DataNotFoundError, match="test") as info:
        load_dataset("cifar100", DataOptions(root=fake_cifar100.root))
    assert str(fake_cifar100.folder / "test") in str(info.value)


def test_cifar100_truncated_pickle_gives_a_clear_error(fake_cifar100):
    path = fake_cifar100.folder / "train"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(CorruptDataError) as info:
        load_dataset("cifar100", DataOptions(root=fake_cifar100.root))
    message = str(info.value)
    assert str(path) in message and "corrupt or incomplete" in message
    assert isinstance(info.value, DataNotFoundError) and info.value.exit_code == 2


def test_cifar100_not_a_pickle_gives_a_clear_error(fake_cifar100):
    (fake_cifar100.folder / "meta").write_text("<html>404 Not Found</html>")
    with pytest.raises(CorruptDataError, match="meta"):
        load_dataset("cifar100", DataOptions(root=fake_cifar100.root))


def test_cifar100_wrong_row_length_gives_a_clear_error(tmp_path, make_cifar100):
    make_cifar100(tmp_path, train_data=np.zeros((2, 3000), dtype=np.uint8))
    with pytest.raises(CorruptDataError, match=r"\(N, 3072\)"):
        load_dataset("cifar100", DataOptions(root=tmp_path))


class _FakeTorchvisionCifar:
    calls: list[dict] = []
    action = None

    def __init__(self, root, train=True, download=False, **kwargs):
        type(self).calls.append({"root": root, "train": train, "download": download})
        type(self).action(root)


@pytest.fixture
def fake_torchvision(monkeypatch):
    monkeypatch.setattr(_FakeTorchvisionCifar, "calls", [])
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", _FakeTorchvisionCifar)
    return _FakeTorchvisionCifar


def test_cifar100_download_goes_through_torchvision_then_our_reader(tmp_path, make_cifar100, fake_torchvision):
    fake_torchvision.action = staticmethod(lambda root: make_cifar100(root, n_train=6, n_test=3))
    splits = load_dataset("cifar100", DataOptions(root=tmp_path, download=True))
    assert fake_torchvision.calls == [{"root": str(tmp_path), "train": True, "download": True}]
    assert splits.train_images.shape == (6, 3, 32, 32) and splits.test_images.shape == (3, 3, 32, 32)


def test_cifar100_present_folder_is_not_downloaded_again(cifar100_root, fake_torchvision):
    fake_torchvision.action = staticmethod(lambda root: pytest.fail("must not download"))
    splits = load_dataset("cifar100", DataOptions(root=cifar100_root, download=True))
    assert fake_torchvision.calls == [] and len(splits.train_labels) == 20


def test_cifar100_failed_download_is_a_usage_error(tmp_path, fake_torchvision):
    def no_network(root):
        raise urllib.error.URLError("Temporary failure in name resolution")

    fake_torchvision.action = staticmethod(no_network)
    with pytest.raises(DataNotFoundError, match="downloading into .* failed") as info:
        load_dataset("cifar100", DataOptions(root=tmp_path, download=True))
    assert str(tmp_path / "cifar-100-python") in str(info.value)


# ----------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> ImageSplits:
    return load_dataset("digits", DataOptions(root=None))  # root and download are ignored


def test_digits_shapes_classes_and_values(digits):
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.class_names == tuple(str(d) for d in range(10))
    assert len(digits.train_labels) + len(digits.test_labels) == 1797
    for images, labels in ((digits.train_images, digits.train_labels), (digits.test_images, digits.test_labels)):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == torch.int64 and labels.shape == (images.shape[0],)
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert int(digits.train_images.min()) == 0 and int(digits.train_images.max()) == 255
    assert set(digits.train_labels.tolist()) == set(range(10)) == set(digits.test_labels.tolist())


def test_digits_match_sklearn_images_upsampled_bilinearly(digits):
    """Independent reference: PIL's bilinear resize of sklearn's 8x8 image scaled to 0..255."""
    from sklearn.datasets import load_digits

    from tekapbench.data.digits import stratified_split

    bunch = load_digits()
    train_idx, _ = stratified_split(bunch.target, 0.2, 0)
    assert np.array_equal(digits.train_labels.numpy(), bunch.target[train_idx])
    for k in (0, 1, 500, len(train_idx) - 1):
        small = Image.fromarray((bunch.images[train_idx[k]] * 255 / 16).astype(np.float32))
        expected = np.asarray(small.resize((32, 32), Image.BILINEAR))
        assert np.abs(digits.train_images[k, 0].numpy() - expected).max() <= 0.5 + 1e-4  # rounding only


def test_digits_are_deterministic_across_loads(digits):
    again = load_dataset("digits", DataOptions(root=None, download=True))
    for field in dataclasses.fields(ImageSplits):
        a, b = getattr(digits, field.name), getattr(again, field.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, field.name


def test_digits_split_is_stratified_80_20(digits):
    train = torch.bincount(digits.train_labels, minlength=10)
    test = torch.bincount(digits.test_labels, minlength=10)
    for n_train, n_test in zip(train.tolist(), test.tolist()):
        assert abs(n_test - 0.2 * (n_train + n_test)) <= 0.5
    assert abs(len(digits.test_labels) / 1797 - 0.2) < 0.01


def test_digits_mean_std_come_from_the_training_split(digits):
    pixels = digits.train_images.double() / 255
    assert digits.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert digits.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


# ----------------------------------------------------------------------------------------------- loader

N, B = 37, 8  # a partial last batch


@pytest.fixture
def split():
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (N,), generator=g)
    return images, labels


def make_loader(split, *, train, device="cpu", **kwargs):
    images, labels = split
    kwargs.setdefault("batch_size", B)
    return DeviceLoader(images, labels, device=device, mean=CIFAR_MEAN, std=CIFAR_STD, train=train, **kwargs)


def plain_normalize(images_u8: torch.Tensor) -> torch.Tensor:
    """The usual ToTensor + Normalize, on a uint8 (N, 3, H, W) batch."""
    return TF.normalize(images_u8.double() / 255, CIFAR_MEAN, CIFAR_STD).float()


def run_epoch(loader, seed=None, device="cpu") -> list[Batch]:
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    return list(loader.epoch(generator))


@pytest.mark.parametrize("train", [True, False])
def test_len_counts_batches(split, train):
    assert len(make_loader(split, train=train)) == 5
    assert len(make_loader(split, train=train, drop_last=True)) == 4
    assert len(run_epoch(make_loader(split, train=train, drop_last=True), seed=0)) == 4
    assert [len(b.labels) for b in run_epoch(make_loader(split, train=train), seed=0)] == [8, 8, 8, 8, 5]


def test_train_epoch_visits_every_index_once(split):
    images, labels = split
    batches = run_epoch(make_loader(split, train=True), seed=0)
    indices = torch.cat([b.indices for b in batches])
    assert sorted(indices.tolist()) == list(range(N))
    assert not torch.equal(indices, torch.arange(N))
    for b in batches:
        assert isinstance(b, Batch)
        assert b.images.dtype == torch.float32 and b.images.shape[1:] == (3, 32, 32)
        assert b.labels.dtype == torch.int64 and b.indices.dtype == torch.int64
        assert torch.equal(b.labels, labels[b.indices])


def test_same_seed_same_batches_different_seed_different_order(split):
    loader = make_loader(split, train=True)
    first, again, other = run_epoch(loader, 7), run_epoch(loader, 7), run_epoch(loader, 8)
    for a, b in zip(first, again):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
    assert not torch.equal(torch.cat([b.indices for b in first]), torch.cat([b.indices for b in other]))


def test_default_generator_is_torch_default(split):
    loader = make_loader(split, train=True)
    torch.manual_seed(5)
    first = run_epoch(loader)
    torch.manual_seed(5)
    again = run_epoch(loader)
    assert all(torch.equal(a.images, b.images) for a, b in zip(first, again))


def test_eval_keeps_order_and_equals_plain_normalization(split):
    images, labels = split
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    batches = list(make_loader(split, train=False).epoch(generator))
    assert torch.equal(generator.get_state(), state)  # unused
    assert torch.equal(torch.cat([b.indices for b in batches]), torch.arange(N))
    assert torch.equal(torch.cat([b.labels for b in batches]), labels)
    assert torch.allclose(torch.cat([b.images for b in batches]), plain_normalize(images), atol=1e-6, rtol=0)


def _reference_crop_flip(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """One image: pad with zeros by 4, slice at the drawn offsets, mirror."""
    padded = F.pad(image, (4, 4, 4, 4))
    crop = padded[:, dy : dy + 32, dx : dx + 32]
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("device", DEVICES)
def test_train_batches_equal_a_per_image_reference(split, device):
    images, labels = split
    loader = make_loader(split, train=True, device=device)
    batches = run_epoch(loader, seed=11, device=device)
    plan = draw_epoch_plan(N, padding=4, flip=True, generator=torch.Generator(device=device).manual_seed(11),
                           device=torch.device(device))
    assert torch.equal(torch.cat([b.indices for b in batches]), plan.order)
    got = torch.cat([b.images for b in batches]).cpu()
    order, dy, dx, flips = (t.cpu().tolist() for t in (plan.order, plan.dy, plan.dx, plan.flip))
    assert set(flips) == {True, False}
    reference = torch.stack([_reference_crop_flip(images[i], y, x, f) for i, y, x, f in zip(order, dy, dx, flips)])
    # Exact in pixel space, and the normalization matches the usual one.
    pixels = (got * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) * 255
    assert torch.equal(pixels.round().to(torch.uint8), reference)
    assert torch.allclose(got, plain_normalize(reference), atol=1e-6, rtol=0)


def test_train_augmentation_matches_torchvision_on_pil(split):
    """The same offsets through torchvision's own functional ops on PIL images (RandomCrop's pad + crop)."""
    images, _ = split
    loader = make_loader(split, train=True)
    got = torch.cat([b.images for b in run_epoch(loader, seed=4)])
    plan = draw_epoch_plan(N, padding=4, flip=True, generator=torch.Generator().manual_seed(4), device=torch.device("cpu"))
    for k in range(N):
        pil = Image.fromarray(images[plan.order[k]].permute(1, 2, 0).numpy())
        pil = TF.crop(TF.pad(pil, 4, fill=0), int(plan.dy[k]), int(plan.dx[k]), 32, 32)
        if plan.flip[k]:
            pil = TF.hflip(pil)
        expected = TF.normalize(TF.to_tensor(pil), CIFAR_MEAN, CIFAR_STD)
        assert torch.allclose(got[k], expected, atol=1e-5, rtol=0), k


def test_draws_cover_all_offsets_and_flip_half_the_time():
    plan = draw_epoch_plan(20_000, padding=4, flip=True, generator=torch.Generator().manual_seed(0),
                           device=torch.device("cpu"))
    assert sorted(plan.order.tolist()) == list(range(20_000))
    assert set(plan.dy.tolist()) == set(range(9)) == set(plan.dx.tolist())
    assert abs(plan.flip.float().mean().item() - 0.5) < 0.02


def test_padded_border_is_minus_mean_over_std(split):
    _, labels = split
    white = torch.full((N, 3, 32, 32), 255, dtype=torch.uint8)
    batches = run_epoch(make_loader((white, labels), train=True), seed=2)
    got = torch.cat([b.images for b in batches])
    plan = draw_epoch_plan(N, padding=4, flip=True, generator=torch.Generator().manual_seed(2), device=torch.device("cpu"))
    black = (-torch.tensor(CIFAR_MEAN) / torch.tensor(CIFAR_STD)).view(3, 1, 1)
    inside = ((1 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)).view(3, 1, 1)
    for k in range(N):
        is_black = torch.isclose(got[k], black.expand(3, 32, 32), atol=1e-6)
        is_inside = torch.isclose(got[k], inside.expand(3, 32, 32), atol=1e-6)
        assert bool((is_black | is_inside).all())
        visible = (32 - abs(int(plan.dy[k]) - 4)) * (32 - abs(int(plan.dx[k]) - 4))
        assert int(is_inside[0].sum()) == visible
    assert bool((got == got.min()).any())  # some border was drawn at all


def test_no_padding_no_flip_is_a_pure_shuffle(split):
    images, _ = split
    batches = run_epoch(make_loader(split, train=True, crop_padding=0, flip=False), seed=9)
    indices = torch.cat([b.indices for b in batches])
    assert torch.allclose(torch.cat([b.images for b in batches]), plain_normalize(images[indices]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("train", [True, False])
def test_channels_last_same_values(split, train):
    plain = run_epoch(make_loader(split, train=train), seed=1)
    last = run_epoch(make_loader(split, train=train, channels_last=True), seed=1)
    for a, b in zip(plain, last):
        assert b.images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(a.images, b.images)


def test_loader_rejects_bad_inputs(split):
    images, labels = split
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, batch_size=4, device="cpu", mean=CIFAR_MEAN, std=CIFAR_STD, train=True)
    with pytest.raises(ValueError, match="mean"):
        DeviceLoader(images, labels, batch_size=4, device="cpu", mean=(0.5,) * 2, std=CIFAR_STD, train=True)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(images, labels[:-1], batch_size=4, device="cpu", mean=CIFAR_MEAN, std=CIFAR_STD, train=True)


def test_batch_is_frozen(split):
    batch = next(iter(make_loader(split, train=False).epoch()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.images = None


def test_loader_runs_on_digits(digits):
    loader = DeviceLoader(digits.train_images, digits.train_labels, batch_size=256, device="cpu",
                          mean=digits.mean, std=digits.std, train=True)
    images = torch.cat([b.images for b in loader.epoch(torch.Generator().manual_seed(0))])
    assert images.shape == digits.train_images.shape
    assert abs(images.mean().item()) < 0.3  # roughly centred by the split's own statistics
