"""The TeKAP paper's class-imbalance table ("TeKAP on class imbalance dataset"): rows Teacher, Student and each
method, columns the teacher->student pairs (overall accuracy on the balanced test set), then the
many/medium/few-shot split per pair."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, grid_by_column, seed_note

GROUPS = (("all", "accuracy"), ("many", "many_shot"), ("medium", "medium_shot"), ("few", "few_shot"))


@LAYOUTS.register("imbalance")
def imbalance(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Overall and many/medium/few-shot accuracy (%) from the shot_groups evaluation."""

    def shot(cell: Cell, key: str) -> float | None:
        stored = results.evaluations(cell.run_id, "shot_groups")
        return stored[-1]["results"][key] if stored else None

    tables = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        mine = [c for c in cells if c.dataset == dataset]
        rows = list(dict.fromkeys(c.row for c in mine))
        pairs = list(dict.fromkeys(c.column for c in mine))
        columns = [f"{pair} · {group}" for pair in pairs for group, _ in GROUPS]
        keys = dict(GROUPS)
        values, missing = {}, 0
        for pair in pairs:
            part, gone = grid_by_column([c for c in mine if c.column == pair], rows,
                                        [f"{pair} · {group}" for group, _ in GROUPS],
                                        lambda c, column: shot(c, keys[column.rsplit(" · ", 1)[1]]))
            values.update(part)
            missing = max(missing, gone)
        tables.append(Table(title=f"{dataset}: top-1 accuracy (%) by training-set class size", rows=rows,
                            columns=columns, cells=values, metric="top-1 per shot group",
                            notes=seed_note("many > 100, medium 20-100, few < 20 training images; "
                                            "– marks an empty group", missing)).mark_best())
    return tables
