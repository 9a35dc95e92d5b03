"""One distillation step (teacher forward, student forward and backward, loss, SGD step): KD against
KD+TeKAP (L) with N=3 synthetic teachers, on resnet56 -> resnet20 with a batch of 64 CIFAR-sized images.

Run with ``python -m pytest tests/benchmarks/test_bench_step.py --benchmark-enable``. The second test
records ``tekap_over_kd`` (target <= 1.05) when both ran in the same session; no timing is asserted.
"""
from __future__ import annotations

import pytest
import torch

from tekapbench.data import Batch
from tekapbench.models.base import probe_shapes
from tekapbench.methods import DistillContext, MethodSpec, Objective, TermSpec
from tekapbench.methods.kd import KDParams
from tekapbench.models import create_model
from tekapbench.modifiers import TeKAPSettings

BATCH = 64
_seconds_per_step: dict[str, float] = {}

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


def _record(benchmark, name: str, report_ratio) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    _seconds_per_step[name] = stats.stats.median
    if name == "kd_tekap" and "kd" in _seconds_per_step:
        benchmark.extra_info["tekap_over_kd"] = round(_seconds_per_step["kd_tekap"] / _seconds_per_step["kd"], 3)
        report_ratio("KD+TeKAP (N=3) / KD, time of one distillation step",
                     _seconds_per_step["kd_tekap"] / _seconds_per_step["kd"], "target <= 1.05")


@pytest.mark.benchmark(group="distillation-step")
@pytest.mark.parametrize("method", ["kd", "kd_tekap"])
def test_distillation_step(benchmark, method, report_ratio):
    step = make_step(method)
    loss = benchmark.pedantic(step, rounds=15, warmup_rounds=3, iterations=1)
    assert torch.isfinite(torch.tensor(loss))
    _record(benchmark, method, report_ratio)
