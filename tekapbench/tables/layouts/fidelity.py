"""Teacher-fidelity table: how closely each student follows its pair's teacher on the test set (top-1
agreement, KL(teacher || student)), from the fidelity evaluations; one table per dataset and pair. The
Teacher row is left out: the evaluation does not apply to the teacher itself (it is stored as skipped)."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note
from tekapbench.tables.shared_settings import shared_evaluations

COLUMNS = {"agreement (%)": "top1_agreement", "KL(T, S)": "kl_teacher_student"}
LOWER_IS_BETTER = {"KL(T, S)"}
TEACHER = "Teacher"


def temperature_note(settings: dict | None) -> list[str]:
    if not settings or "temperature" not in settings:
        return []
    return [f"KL(T, S) = KL(teacher || student) of the softmax at temperature {settings['temperature']:g}, "
            f"mean over the test set"]


@LAYOUTS.register("fidelity")
def fidelity(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Top-1 agreement with the teacher (%) and KL(teacher || student) per method."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = [row for row in dict.fromkeys(c.row for c in mine) if row != TEACHER]
        stored = shared_evaluations([c for c in mine if c.row != TEACHER], results, "fidelity")
        values, missing = grid_by_column(mine, rows, list(COLUMNS),
                                         lambda c, column: stored.value(c.run_id, COLUMNS[column]))
        notes = seed_note("fidelity to the pair's teacher on the test set", missing)
        notes += temperature_note(stored.settings) + stored.notes()
        tables.append(Table(title=f"{dataset} {pair}: fidelity to the teacher", rows=rows, columns=list(COLUMNS),
                            cells=values, metric="fidelity", notes=notes).mark_best(lower_is_better=LOWER_IS_BETTER))
    return tables
