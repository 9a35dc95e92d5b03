"""One training epoch of input pipeline: the usual PIL + DataLoader path against DeviceLoader on the CPU.

Run the measurement with ``python -m pytest tests/benchmarks/test_bench_loader.py --benchmark-enable``
(the project disables benchmarks by default: each function then runs once, as a smoke test). Both tests
record images/s in ``extra_info``; the second also records ``speedup_vs_usual_pipeline`` (target >= 10)
when the first ran in the same session. No timing is asserted.

Both pipelines do the same work: RandomCrop(32, padding=4) + horizontal flip + normalization with batch 64
over the same 10,000 random uint8 32x32 images, and read one value of every batch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from tekapbench.data import DeviceLoader

N_IMAGES = 10_000
BATCH = 64
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)

_seconds_per_epoch: dict[str, float] = {}  # filled by the tests, read for the ratio


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (N_IMAGES,), generator=g)
    return images, labels


class PILDataset(Dataset):
    """What torchvision's CIFAR100 does per item: a PIL image from an HWC uint8 array, then transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) like CIFAR100.data
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def _record(benchmark, name: str, report_ratio) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    seconds = stats.stats.mean
    _seconds_per_epoch[name] = seconds
    benchmark.extra_info["images_per_second"] = round(N_IMAGES / seconds)
    if name == "device" and "usual" in _seconds_per_epoch:
        benchmark.extra_info["speedup_vs_usual_pipeline"] = round(_seconds_per_epoch["usual"] / seconds, 1)
        report_ratio("DeviceLoader / usual PIL+DataLoader pipeline, images per second",
                     _seconds_per_epoch["usual"] / seconds, "target >= 10")


@pytest.mark.benchmark(group="loader")
def test_usual_pil_dataloader_epoch(benchmark, split, report_ratio):
    images, labels = split
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=BATCH, shuffle=True, num_workers=2)

    def epoch() -> int:
        seen = 0
        for x, y in loader:
            seen += x.shape[0]
            float(x[0, 0, 0, 0])
        return seen

    assert benchmark.pedantic(epoch, rounds=3, warmup_rounds=0, iterations=1) == N_IMAGES
    _record(benchmark, "usual", report_ratio)


@pytest.mark.benchmark(group="loader")
def test_device_loader_epoch_cpu(benchmark, split, report_ratio):
    images, labels = split
    loader = DeviceLoader(images, labels, batch_size=BATCH, device="cpu", mean=MEAN, std=STD, train=True)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> int:
        seen = 0
        for batch in loader.epoch(generator):
            seen += batch.images.shape[0]
            float(batch.images[0, 0, 0, 0])
        return seen

    assert benchmark.pedantic(epoch, rounds=10, warmup_rounds=1, iterations=1) == N_IMAGES
    _record(benchmark, "device", report_ratio)
    assert np.isfinite(float(next(iter(loader.epoch(generator))).images.sum()))
