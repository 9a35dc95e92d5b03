"""One training epoch of four students that learn from one teacher: as a cohort (engine/cohort.py: one
teacher forward per batch for all) against the four trained one by one, on CIFAR-sized images on the CPU.

The teacher forward is about half of a KD step for resnet56 -> resnet20 (measured: 48 %), so a cohort of 4
should take 4 (T + S) / (T + 4 S), about 1.56x less time. Both are timed back to back in each round,
alternating which goes first; the median over rounds of their ratio is gated (>= 1.5) by
``tekapbench check --benchmarks`` with results/baselines/speed.toml. The same for resnet32x4 -> resnet8x4
(teacher share 61 %) is reported in the README. No timing is asserted here.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from tekapbench.data.base import ImageSplits
from tekapbench.engine.cohort import Cohort, RandomState
from tekapbench.engine.objective import MethodSpec, TermSpec
from tekapbench.engine.recipe import resolve_recipe
from tekapbench.engine.trainer import Trainer, TrainJob
from tekapbench.methods.dkd import DKDParams
from tekapbench.methods.kd import KDParams
from tekapbench.models import create_model
from tekapbench.modifiers import TeKAPSettings

BATCH = 64
BATCHES = 2  # one "epoch" here: 2 batches of 64 (the ratio does not depend on the epoch's length)
STUDENTS = {
    "KD": MethodSpec(0.1, (TermSpec("kd", 0.9, KDParams()),)),
    "KD+TeKAP (L)": MethodSpec(0.1, (TermSpec("kd", 0.9, KDParams(), TeKAPSettings(level="logit")),)),
    "DKD": MethodSpec(1.0, (TermSpec("dkd", 1.0, DKDParams(beta=8.0, warmup=1)),)),
    "DKD+TeKAP (L)": MethodSpec(1.0, (TermSpec("dkd", 1.0, DKDParams(beta=8.0, warmup=1), TeKAPSettings(level="logit")),)),
}
PAIRS = {"resnet56 -> resnet20": ("resnet56", "resnet20"), "resnet32x4 -> resnet8x4": ("resnet32x4", "resnet8x4")}


def cifar_sized(n: int) -> ImageSplits:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 100, (n,), generator=g)
    return ImageSplits("random", images, labels, images[:BATCH], labels[:BATCH], 100,
                       (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def trainers(pair: str, tmp_path) -> list[Trainer]:
    teacher_arch, student_arch = PAIRS[pair]
    data = cifar_sized(BATCH * BATCHES)
    teacher = create_model(teacher_arch, 100).eval()
    recipe = resolve_recipe("cifar100", student_arch, {"epochs": 1, "batch_size": BATCH})
    return [Trainer(TrainJob(run_id=f"bench-{i}", arch=student_arch, recipe=recipe, seed=0, method=method, data=data,
                             workdir=tmp_path / str(i), device=torch.device("cpu"), teacher=teacher))
            for i, method in enumerate(STUDENTS.values())]


def measure(benchmark, pair: str, tmp_path) -> None:
    alone = trainers(pair, tmp_path / "alone")
    together = trainers(pair, tmp_path / "together")
    cohort = Cohort.of(together, [RandomState.capture(torch.device("cpu")) for _ in together])
    seconds: dict[str, list[float]] = {"alone": [], "cohort": []}
    work = {"alone": lambda: [t.train_epoch(1) for t in alone], "cohort": lambda: cohort.train_epoch(1)}
    order = list(work)

    def both() -> None:
        order.reverse()
        for name in order:
            started = time.perf_counter()
            work[name]()
            seconds[name].append(time.perf_counter() - started)

    benchmark.pedantic(both, rounds=5, warmup_rounds=1, iterations=1)
    assert all(m.error is None for m in cohort.members)
    pairs = list(zip(seconds["alone"], seconds["cohort"]))
    pairs = pairs[1:] or pairs  # without the warm-up round (all of it when run once, disabled)
    benchmark.extra_info["students"] = len(STUDENTS)
    benchmark.extra_info["items"] = BATCH * BATCHES
    benchmark.extra_info["alone_over_cohort_median_ratio"] = statistics.median(a / c for a, c in pairs)


@pytest.mark.benchmark(group="cohort")
def test_cohort_epoch_resnet56_resnet20(benchmark, tmp_path):
    measure(benchmark, "resnet56 -> resnet20", tmp_path)


@pytest.mark.benchmark(group="cohort")
def test_cohort_epoch_resnet32x4_resnet8x4(benchmark, tmp_path):
    measure(benchmark, "resnet32x4 -> resnet8x4", tmp_path)
