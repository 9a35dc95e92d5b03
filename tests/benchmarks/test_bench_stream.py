"""One epoch of the streaming path for image files (ImageNet) against torchvision's usual ImageFolder pipeline.

Both decode the same JPEGs with one worker process, apply RandomResizedCrop + flip and normalize, batch 64,
and read one value of every batch. The streaming loader also seeds every image's crop and flip (so that
batches do not depend on the worker count) and normalizes after the batch is assembled; the gate
(results/baselines/speed.toml) bounds what that costs. No timing is asserted here.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from imagenet_fixture import write_imagenet_fixture
from tekapbench.data.base import LoaderSettings
from tekapbench.data.imagefolder import read_imagefolder

CLASSES = 100
PER_CLASS = 10
BATCH = 64
CROP = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_imagenet_fixture(tmp_path_factory.mktemp("stream"), classes=CLASSES, train_per_class=PER_CLASS,
                                  val_per_class=1).folder


def _run(benchmark, batches) -> None:
    def epoch() -> int:
        seen = 0
        for x in batches():
            seen += x.shape[0]
            float(x[0, 0, 0, 0])
        return seen

    assert benchmark.pedantic(epoch, rounds=5, warmup_rounds=1, iterations=1) == CLASSES * PER_CLASS
    benchmark.extra_info["items"] = CLASSES * PER_CLASS


@pytest.mark.benchmark(group="stream")
def test_torchvision_imagefolder_epoch(benchmark, folder):
    transform = transforms.Compose([transforms.RandomResizedCrop(CROP), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    loader = DataLoader(datasets.ImageFolder(folder / "train", transform), batch_size=BATCH, shuffle=True,
                        num_workers=1, persistent_workers=True)
    _run(benchmark, lambda: (x for x, _ in loader))


@pytest.mark.benchmark(group="stream")
def test_folder_loader_epoch(benchmark, folder):
    data = read_imagefolder(folder, name="bench", num_classes=CLASSES, mean=MEAN, std=STD, image_size=CROP, workers=1)
    loader = data.loader(True, LoaderSettings(batch_size=BATCH), "cpu")
    generator = torch.Generator().manual_seed(0)
    _run(benchmark, lambda: (batch.images for batch in loader.epoch(generator)))
