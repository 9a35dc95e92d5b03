"""Common-corruption table: rows Teacher, Student and each method; columns clean top-1, the mean over
all corruptions and severities, and the mean over corruptions at each severity, from the corruptions
evaluations (CIFAR-100-C files or generated corruptions); one table per dataset and pair."""
from __future__ import annotations

import statistics

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note
from tekapbench.tables.shared_settings import SharedEvaluations, shared_evaluations

CLEAN, MEAN = "clean", "mean corrupted"


def severities(stored: dict) -> list[int]:
    """The severities of one stored result's per_severity table {corruption: {severity: accuracy}}."""
    return sorted({int(s) for by_severity in stored.get("per_severity", {}).values() for s in by_severity})


def severity_accuracy(stored: dict, severity: int) -> float | None:
    """Top-1 (%) at one severity, mean over the corruptions (JSON stores the severities as strings)."""
    values = [acc for by_severity in stored.get("per_severity", {}).values()
              for s, acc in by_severity.items() if int(s) == severity]
    return statistics.fmean(values) if values else None


def source_note(stored: SharedEvaluations) -> list[str]:
    """Where the corrupted images came from and which corruptions the mean covers."""
    notes = []
    for source in dict.fromkeys(r.get("source") for r in stored.results.values()):
        names = list(dict.fromkeys(n for r in stored.results.values() if r.get("source") == source
                                   for n in r.get("corruptions", [])))
        seed = (stored.settings or {}).get("seed")
        origin = ("CIFAR-100-C files" if source == "files"
                  else f"{source} corruptions" + ("" if seed is None else f" (seed {seed})"))
        notes.append(f"{origin}: {', '.join(names)}")
    return notes


def _column(severity: int) -> str:
    return f"severity {severity}"


@LAYOUTS.register("corruptions")
def corruptions(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Clean, mean corrupted and per-severity top-1 (%) under common corruptions."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        stored = shared_evaluations(mine, results, "corruptions")
        levels = sorted({s for r in stored.results.values() for s in severities(r)})
        value_of = {CLEAN: lambda r: r.get("clean_accuracy"), MEAN: lambda r: r.get("mean_corruption_accuracy"),
                    **{_column(s): lambda r, s=s: severity_accuracy(r, s) for s in levels}}
        columns = list(value_of)
        values, missing = grid_by_column(
            mine, rows, columns,
            lambda c, column: value_of[column](stored.results[c.run_id]) if c.run_id in stored.results else None)
        notes = seed_note("top-1 (%) on the corrupted test set; severity s: mean over corruptions; "
                          "mean corrupted: over corruptions and severities", missing)
        notes += source_note(stored) + stored.notes()
        tables.append(Table(title=f"{dataset} {pair}: common corruptions", rows=rows, columns=columns, cells=values,
                            metric="corruption top-1", notes=notes).mark_best())
    return tables
