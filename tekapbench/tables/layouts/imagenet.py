"""The TeKAP paper's ImageNet table ("Comparison with KD on ImageNet"): top-1 and top-5 error (%) of
Teacher, Student and each method, per pair."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note

ERRORS = {"Top-1 error": "test_acc_last", "Top-5 error": "test_top5_last"}


@LAYOUTS.register("imagenet")
def imagenet(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Top-1 and top-5 error (%), last epoch; lower is better."""

    def error(cell: Cell, column: str) -> float | None:
        record = results.record(cell.run_id)
        accuracy = record["metrics"].get(ERRORS[column]) if record else None
        return None if accuracy is None else 100.0 - accuracy

    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        values, missing = grid_by_column(mine, rows, list(ERRORS), error)
        keys = {column: {"dataset": dataset, "teacher": mine[0].teacher, "student": mine[0].student,
                         "metric": metric} for column, metric in zip(ERRORS, ("top1_error", "top5_error"))}
        tables.append(Table(title=f"{dataset} {pair}: error (%)", rows=rows, columns=list(ERRORS), cells=values,
                            column_keys=keys,
                            metric="top-1/top-5 error, last epoch",
                            notes=seed_note("error = 100 - accuracy, last epoch", missing)).mark_best(higher_is_better=False))
    return tables
