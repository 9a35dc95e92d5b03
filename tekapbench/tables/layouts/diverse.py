"""The 'diverse networks' layout of the TeKAP paper: one column per teacher->student pair, rows Teacher,
Student and each method of the suite, in suite order; one table per dataset."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, MetricLookup, Stat, Table


@LAYOUTS.register("diverse")
def diverse_networks(cells: list[Cell], value_of: MetricLookup, metric_label: str) -> list[Table]:
    """Rows Teacher, Student and each method; one column per teacher->student pair (the seed's tables)."""
    tables = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        mine = [c for c in cells if c.dataset == dataset]
        rows = list(dict.fromkeys(c.row for c in mine))
        columns = list(dict.fromkeys(c.column for c in mine))
        grid: dict[tuple[str, str], Stat | None] = {}
        missing = 0
        for row in rows:
            for column in columns:
                # one value per run: a teacher shared by several seeds counts once
                runs = dict.fromkeys(c.run_id for c in mine if c.row == row and c.column == column)
                values = [value_of(run_id) for run_id in runs]
                missing += sum(v is None for v in values)
                grid[row, column] = Stat.of(v for v in values if v is not None)
        notes = [f"{metric_label}; mean ± sample std over seeds"]
        if missing:
            notes.append(f"{missing} run(s) not finished yet")
        tables.append(Table(title=f"{dataset}: top-1 accuracy (%)", rows=rows, columns=columns, cells=grid,
                            metric=metric_label, notes=notes))
    return tables
