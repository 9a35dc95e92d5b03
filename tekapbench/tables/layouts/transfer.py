"""The TeKAP paper's transferability table ("Transferability to different dataset"): rows Teacher, Student and each
method, one column per target dataset of the transfer evaluations (linear-probe accuracy); one table per dataset
and pair."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note


@LAYOUTS.register("transfer")
def transfer(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Linear-probe top-1 accuracy (%) on each target dataset from the frozen features."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        found: dict[str, dict[str, float]] = {}
        keys: dict[str, dict] = {}
        for cell in mine:
            for stored in results.evaluations(cell.run_id, "transfer"):
                target = stored["results"]["dataset"]
                found.setdefault(cell.run_id, {})[f"{dataset} → {target}"] = stored["results"]["accuracy"]
                keys[f"{dataset} → {target}"] = {"dataset": dataset, "teacher": cell.teacher, "student": cell.student,
                                                  "metric": f"probe_top1_{target}"}
        columns = sorted({k for v in found.values() for k in v})
        values, missing = grid_by_column(mine, rows, columns, lambda c, column: found.get(c.run_id, {}).get(column))
        tables.append(Table(title=f"{pair}: linear-probe transfer, top-1 accuracy (%)", rows=rows, columns=columns,
                            cells=values, metric="probe top-1", column_keys=keys,
                            notes=seed_note("frozen pooled features, L-BFGS logistic regression", missing)).mark_best())
    return tables
