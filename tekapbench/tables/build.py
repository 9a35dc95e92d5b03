"""Tables of a results folder: reads each suite's plan.json and the latest record of every run."""
from __future__ import annotations

import json
from pathlib import Path

from tekapbench.engine.watch import read_history
from tekapbench.errors import UsageError
from tekapbench.results.store import ResultStore
from tekapbench.tables.base import LAYOUTS, Cell, Table, settle_marks, with_delta

METRICS = {"last": ("test_acc_last", "last-epoch top-1"), "best": ("test_acc_best", "best-epoch top-1")}


class StoredResults:
    """A suite's stored records and evaluations, as layouts read them (the latest finished attempt)."""

    def __init__(self, store: ResultStore, metric: str):
        self.store = store
        self.key, self.metric_label = METRICS[metric]

    def record(self, run_id: str) -> dict | None:
        return self.store.latest_record(run_id)

    def history(self, run_id: str) -> tuple[list[dict], bool]:
        """The run's epochs and whether it is finished: the record's history, or for a run not finished
        (training now, or interrupted) the epochs so far in its latest attempt's history.jsonl."""
        record = self.record(run_id)
        if record is not None and self.store.is_done(run_id):
            return record.get("history") or [], True
        attempts = self.store.attempts(run_id)
        return (read_history(attempts[-1]) if attempts else []), False

    def accuracy(self, run_id: str) -> float | None:
        record = self.record(run_id)
        return None if record is None else record["metrics"].get(self.key)

    def evaluations(self, run_id: str, name: str) -> list[dict]:
        return [e for e in self.store.evaluations(run_id).values()
                if e["evaluation"] == name and "skipped" not in e["results"]]


def suites_in(results_root: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(results_root).glob("*/plan.json"))


def suite_results(results_root: Path, suite: str, metric: str = "last") -> tuple[dict, list[Cell], StoredResults]:
    """A suite's plan, its cells and a view of its stored results."""
    store = ResultStore(results_root, suite)
    plan_path = store.dir / "plan.json"
    try:
        plan = json.loads(plan_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{plan_path}: cannot read the suite plan ({exc})") from None
    if plan.get("suite", suite) != suite:
        raise UsageError(f"{plan_path} belongs to suite {plan['suite']!r}, not {suite!r}: the folder was copied "
                         f"or renamed; move it back to {store.root / plan['suite']}")
    return plan, [Cell(**c) for c in plan["cells"]], StoredResults(store, metric)


def suite_tables(results_root: Path, suite: str, *, metric: str = "last", layout: str | None = None,
                 delta: str | None = None, ci: bool = True) -> list[Table]:
    """A suite's tables in each of its layouts (or the one asked for), with paired differences to the
    ``delta`` row if given, and marks settled with or without confidence intervals (``settle_marks``)."""
    plan, cells, results = suite_results(results_root, suite, metric)
    layouts = [layout] if layout else plan_layouts(plan)
    tables = [table for name in layouts for table in LAYOUTS.get(name)(cells, results)]
    for table in tables:
        table.title = f"{suite} · {table.title}"
    if delta is not None:
        tables = [with_delta(table, delta) for table in tables]
    return [settle_marks(table, ci) for table in tables]


def plan_layouts(plan: dict) -> list[str]:
    """The layouts a suite asked for: ``[suite] layout`` is one name or a list of them."""
    layout = plan.get("layout", "diverse")
    return [layout] if isinstance(layout, str) else list(layout)


def chosen_suites(results_root: Path, suite: str | None) -> list[str]:
    """The suites with results under the folder, or the one asked for (an error if it has none)."""
    available = suites_in(results_root)
    if not available:
        raise UsageError(f"no results under {results_root}/: run `tekapbench run SUITE.toml` first")
    if suite is not None and suite not in available:
        raise UsageError(f"no results for suite {suite!r} under {results_root}/; suites with results: "
                         f"{', '.join(available)}")
    return [suite] if suite else available


def all_tables(results_root: Path, suite: str | None = None, *, metric: str = "last", layout: str | None = None,
               delta: str | None = None, ci: bool = True) -> list[tuple[str, list[Table]]]:
    return [(name, suite_tables(results_root, name, metric=metric, layout=layout, delta=delta, ci=ci))
            for name in chosen_suites(results_root, suite)]
