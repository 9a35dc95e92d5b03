"""Evaluation throughput on CIFAR-sized images with resnet20 (100 classes): clean inference, PGD-10, and
the transfer probe's feature extraction, in images per second.

Run with ``python -m pytest tests/benchmarks --benchmark-enable --benchmark-json bench.json``; the cost
per image of PGD-10 and of feature extraction relative to clean inference are gated by
``tekapbench check --benchmarks bench.json`` (bounds in results/baselines/speed.toml). No timing is
asserted here; ``extra_info`` holds images/s.
"""
from __future__ import annotations

import pytest
import torch

from tekapbench.data.base import DataOptions, ImageSplits
from tekapbench.evaluations import EvalContext
from tekapbench.evaluations.adversarial import AdversarialParams, attack_rows
from tekapbench.evaluations.base import NormalizedLogits
from tekapbench.models import create_model

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CLEAN_IMAGES, PGD_IMAGES = 1024, 128


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (CLEAN_IMAGES, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (CLEAN_IMAGES,))
    data = ImageSplits("bench", images, labels, images, labels, 100, MEAN, STD)
    model = create_model("resnet20", 100).eval()
    return EvalContext(model=model, data=data, device=torch.device("cpu"), data_options=DataOptions(root="unused"),
                       batch_size=256)


def _throughput(benchmark, images: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # --benchmark-disable: ran once, nothing measured
        benchmark.extra_info["images_per_second"] = round(images / stats.stats.median)


@pytest.mark.benchmark(group="evaluation")
def test_clean_inference(benchmark, setup):
    benchmark.extra_info["items"] = CLEAN_IMAGES
    logits = benchmark.pedantic(lambda: setup.outputs(setup.model, setup.data.test_images, setup.data.test_labels)[0],
                                rounds=3, warmup_rounds=1, iterations=1)
    assert logits.shape == (CLEAN_IMAGES, 100)
    _throughput(benchmark, CLEAN_IMAGES)


@pytest.mark.benchmark(group="evaluation")
def test_pgd10(benchmark, setup):
    model = NormalizedLogits(setup.model, MEAN, STD).eval()
    x = setup.data.test_images[:PGD_IMAGES].float() / 255
    y = setup.data.test_labels[:PGD_IMAGES]
    params = AdversarialParams(attacks=["pgd"], eps=[8.0], pgd_steps=10)
    benchmark.extra_info["items"] = PGD_IMAGES
    clean, rows = benchmark.pedantic(lambda: attack_rows(model, x, y, params, 128, 100), rounds=2, iterations=1)
    assert rows[0]["robust_acc"] <= clean
    _throughput(benchmark, PGD_IMAGES)


@pytest.mark.benchmark(group="evaluation")
def test_probe_feature_extraction(benchmark, setup):
    benchmark.extra_info["items"] = CLEAN_IMAGES
    features = benchmark.pedantic(lambda: setup.outputs(setup.model, setup.data.train_images,
                                                        setup.data.train_labels)[1], rounds=3, iterations=1)
    assert features.shape == (CLEAN_IMAGES, 64)
    _throughput(benchmark, CLEAN_IMAGES)
