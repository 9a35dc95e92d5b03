"""The 'diverse networks' layout of the TeKAP paper: one column per teacher->student pair, rows Teacher,
Student and each method of the suite, in suite order; one table per dataset."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, grid, seed_note


@LAYOUTS.register("diverse")
@LAYOUTS.register("teacher_assistant")  # the TeKAP paper's TA table has the same shape, with TAKD/DGKD/... rows
def diverse_networks(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Rows Teacher, Student and each method; one column per teacher->student pair (the TeKAP paper's tables)."""
    tables = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        mine = [c for c in cells if c.dataset == dataset]
        rows = list(dict.fromkeys(c.row for c in mine))
        columns = list(dict.fromkeys(c.column for c in mine))
        values, missing = grid(mine, rows, columns, lambda c: results.accuracy(c.run_id))
        keys = {c.column: {"dataset": dataset, "teacher": c.teacher, "student": c.student, "metric": "top1"}
                for c in mine}
        tables.append(Table(title=f"{dataset}: top-1 accuracy (%)", rows=rows, columns=columns, cells=values,
                            metric=results.metric_label, notes=seed_note(results.metric_label, missing),
                            column_keys=keys).mark_best())
    return tables
