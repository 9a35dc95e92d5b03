"""Calibration table: rows Teacher, Student and each method; columns ECE (%), NLL and the top-1 of the
same predictions, from the calibration evaluations; one table per dataset and pair. Lower ECE and NLL
are better, so those columns bold their lowest value."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note
from tekapbench.tables.shared_settings import shared_evaluations

COLUMNS = {"ECE (%)": "ece", "NLL": "nll", "top-1 (%)": "accuracy"}  # column -> key of the stored results
LOWER_IS_BETTER = {"ECE (%)", "NLL"}


def bins_note(settings: dict | None) -> list[str]:
    """How the ECE was measured, from the stored settings (not the evaluation's current default)."""
    if not settings or "bins" not in settings:
        return []
    return [f"ECE over {settings['bins']} equal-width bins of the max softmax probability; NLL in nats"]


@LAYOUTS.register("calibration")
def calibration(cells: list[Cell], results: ResultsView) -> list[Table]:
    """ECE (%), NLL and top-1 (%) of the test-set predictions."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        stored = shared_evaluations(mine, results, "calibration")
        values, missing = grid_by_column(mine, rows, list(COLUMNS),
                                         lambda c, column: stored.value(c.run_id, COLUMNS[column]))
        notes = seed_note("calibration of the test-set predictions of the final weights", missing)
        notes += bins_note(stored.settings) + stored.notes()
        tables.append(Table(title=f"{dataset} {pair}: calibration", rows=rows, columns=list(COLUMNS), cells=values,
                            metric="calibration", notes=notes).mark_best(lower_is_better=LOWER_IS_BETTER))
    return tables
