"""One training epoch of input pipeline: the usual PIL + DataLoader path against DeviceLoader on the CPU.

Run the measurement with ``python -m pytest tests/benchmarks --benchmark-enable --benchmark-json bench.json``
(the project disables benchmarks by default: each function then runs once, as a smoke test); the speed-up
(bound >= 10) is gated by ``tekapbench check --benchmarks bench.json`` (results/baselines/speed.toml).
Both tests record images/s in ``extra_info``. No timing is asserted here.

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


def _throughput(benchmark) -> None:
    benchmark.extra_info["items"] = N_IMAGES
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # --benchmark-disable: ran once, nothing measured
        benchmark.extra_info["images_per_second"] = round(N_IMAGES / stats.stats.median)


@pytest.mark.benchmark(group="loader")
def test_usual_pil_dataloader_epoch(benchmark, split):
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
    _throughput(benchmark)


@pytest.mark.benchmark(group="loader")
def test_device_loader_epoch_cpu(benchmark, split):
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
    _throughput(benchmark)
    assert np.isfinite(float(next(iter(loader.epoch(generator))).images.sum()))
