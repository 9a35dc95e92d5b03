"""The numbers a regression gate compares, read from a results folder: per group (suite, dataset,
teacher -> student column, table row) and metric, one value per seed.

Record metrics are top-1 (last and best epoch) and top-5; every stored evaluation adds the headline
scores it declares (``register_evaluation(..., scores=...)``), named ``<evaluation>:<score>``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tekapbench.evaluations import EVALUATIONS
from tekapbench.evaluations.base import Score
from tekapbench.registry import UnknownNameError
from tekapbench.tables.build import suite_results, suites_in

# record metric -> its name in the gate (percentages, higher is better, 1 point tolerated by default)
RECORD_METRICS = {"test_acc_last": "top1", "test_acc_best": "top1_best", "test_top5_last": "top5"}


@dataclass(frozen=True, order=True)
class Group:
    suite: str
    dataset: str
    pair: str
    row: str

    def __str__(self) -> str:
        return f"{self.suite} · {self.dataset} · {self.pair} · {self.row}"

    def to_dict(self) -> dict[str, str]:
        return {"suite": self.suite, "dataset": self.dataset, "pair": self.pair, "row": self.row}


@dataclass
class Metric:
    """One metric of one group: a value per seed, its direction and its default tolerated drop."""

    higher_is_better: bool
    tolerance: float
    values: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "default_tolerance": self.tolerance,
                "values": {str(seed): v for seed, v in sorted(self.values.items())}}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Metric":
        return Metric(bool(d["higher_is_better"]), float(d["default_tolerance"]),
                      {int(seed): float(v) for seed, v in d["values"].items()})


@dataclass
class Measured:
    """Everything measured in a results folder, and how (threads, CPU, torch) for the comparison's notes."""

    groups: dict[Group, dict[str, Metric]] = field(default_factory=dict)
    environment: dict[str, list[str]] = field(default_factory=dict)  # suite -> distinct "how" descriptions
    notes: list[str] = field(default_factory=list)
    unfinished: dict[str, int] = field(default_factory=dict)  # suite -> runs or evaluations not stored yet

    def add(self, group: Group, name: str, seed: int, score: Score) -> None:
        if score.value is None or math.isnan(score.value):
            return
        metric = self.groups.setdefault(group, {}).setdefault(name, Metric(score.higher_is_better, score.tolerance))
        metric.values[seed] = float(score.value)


def environment_of(record: dict[str, Any]) -> str:
    """What decides whether two CPU runs give the same numbers: device, threads and torch."""
    p = record.get("provenance", {})
    threads = f", {p['torch_threads']} threads" if p.get("device") == "cpu" and "torch_threads" in p else ""
    return f"{p.get('device_name', '?')}{threads}, torch {p.get('torch', '?')}"


def run_scores(record: dict[str, Any], evaluations: dict[str, dict[str, Any]]) -> tuple[dict[str, Score], list[str]]:
    """The gate's scores of one finished run: its record metrics and its stored evaluations' scores."""
    scores = {name: Score(record["metrics"][key]) for key, name in RECORD_METRICS.items()
              if record["metrics"].get(key) is not None}
    notes = []
    by_name: dict[str, list[tuple[str, dict]]] = {}
    for key, stored in evaluations.items():
        if "skipped" not in stored["results"]:
            by_name.setdefault(stored["evaluation"], []).append((key, stored))
    for name, stored_list in by_name.items():
        try:
            entry = EVALUATIONS.get(name)
        except UnknownNameError:
            notes.append(f"stored evaluation {name!r} is not registered in this tekapbench; not compared")
            continue
        for key, stored in stored_list:
            # one stored result of an evaluation: plain names; several (other settings): qualified by key
            prefix = name if len(stored_list) == 1 else key
            scores.update({f"{prefix}:{score}": value for score, value in entry.scores(stored["results"]).items()})
    return scores, notes


def measure(results_root: Path | str, suites: list[str] | None = None) -> Measured:
    """Reads every suite with results under ``results_root``, or those of ``suites`` it has (a suite
    without results is simply absent: a comparison reports its groups as missing)."""
    measured = Measured()
    available = suites_in(Path(results_root))
    for name in available if suites is None else [s for s in suites if s in available]:
        plan, cells, results = suite_results(Path(results_root), name)
        environments = set()
        unfinished = set()
        for cell in cells:
            record = results.record(cell.run_id)
            if record is None:
                unfinished.add(cell.run_id)
                continue
            environments.add(environment_of(record))
            stored = results.store.evaluations(cell.run_id)
            unfinished.update((cell.run_id, e["key"]) for e in plan.get("evaluations", []) if e["key"] not in stored)
            scores, notes = run_scores(record, stored)
            measured.notes += [f"{name}: run {cell.run_id}: {n}" for n in notes]
            group = Group(name, cell.dataset, cell.column, cell.row)
            measured.groups.setdefault(group, {})
            for metric, score in scores.items():
                measured.add(group, metric, cell.seed, score)
        measured.environment[name] = sorted(environments)
        if unfinished:
            measured.unfinished[name] = len(unfinished)
    measured.notes = list(dict.fromkeys(measured.notes))
    return measured
