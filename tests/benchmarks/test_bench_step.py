"""One distillation step (teacher forward, student forward and backward, loss, SGD step): KD against
KD+TeKAP (L) with N=3 synthetic teachers, on resnet56 -> resnet20 with a batch of 64 CIFAR-sized images.

Run with ``python -m pytest tests/benchmarks --benchmark-enable --benchmark-json bench.json``; the ratio
KD+TeKAP / KD (the median over rounds of the two steps timed back to back; bound <= 1.10) is gated by ``tekapbench check --benchmarks bench.json``
with the bounds of results/baselines/speed.toml. No timing is asserted here.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from tekapbench.data import Batch
from tekapbench.models.base import probe_shapes
from tekapbench.methods import DistillContext
from tekapbench.engine.objective import MethodSpec, Objective, TermSpec
from tekapbench.methods.kd import KDParams
from tekapbench.models import create_model
from tekapbench.modifiers import TeKAPSettings

BATCH = 64

METHODS = {
    "kd": MethodSpec(0.1, (TermSpec("kd", 0.9, KDParams()),)),
    "kd_tekap": MethodSpec(0.1, (TermSpec("kd", 0.9, KDParams(), TeKAPSettings(level="logit", n_teachers=3)),)),
}


def make_step(method: str):
    torch.manual_seed(0)
    device = torch.device("cpu")
    student, teacher = create_model("resnet20", 100), create_model("resnet56", 100).eval()
    ctx = DistillContext(student=probe_shapes(student, 32, device), teacher=probe_shapes(teacher, 32, device),
                         num_classes=100, train_labels=torch.arange(1000) % 100, device=device)
    objective = Objective(METHODS[method], ctx)
    objective.reseed(0)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batch = Batch(images=torch.randn(BATCH, 3, 32, 32), labels=torch.randint(0, 100, (BATCH,)),
                  indices=torch.arange(BATCH))

    def step() -> float:
        with torch.no_grad():
            t_out = teacher(batch.images)
        s_out = student(batch.images)
        loss = sum(objective(s_out, t_out, batch, epoch=1).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


@pytest.mark.benchmark(group="distillation-step")
def test_distillation_steps_interleaved(benchmark):
    """Each round runs one KD step and one KD+TeKAP step, alternating which goes first, and times each:
    both see the same state of a shared machine, which two benchmarks run one after the other do not."""
    steps = {method: make_step(method) for method in METHODS}
    seconds: dict[str, list[float]] = {method: [] for method in METHODS}
    order = list(METHODS)
    losses = []

    def both_steps() -> None:
        order.reverse()
        for method in order:
            started = time.perf_counter()
            losses.append(steps[method]())
            seconds[method].append(time.perf_counter() - started)

    benchmark.pedantic(both_steps, rounds=30, warmup_rounds=3, iterations=1)
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses)
    benchmark.extra_info["items"] = BATCH
    for method, times in seconds.items():
        measured = times[3:] or times  # without the warm-up rounds (all of them when run once, disabled)
        benchmark.extra_info[f"{method}_min_seconds"] = min(measured)
        benchmark.extra_info[f"{method}_median_seconds"] = statistics.median(measured)
    # the two steps of a round ran back to back: the median of their ratios is what a slow moment of a
    # shared machine disturbs least
    pairs = list(zip(seconds["kd_tekap"], seconds["kd"]))[3:] or list(zip(seconds["kd_tekap"], seconds["kd"]))
    benchmark.extra_info["tekap_over_kd_median_ratio"] = statistics.median(t / k for t, k in pairs)
