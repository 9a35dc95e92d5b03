"""The seed's adversarial-robustness table, with the protocol stated: rows Teacher, Student and each
method; columns clean accuracy and robust accuracy per (attack, eps); one table per dataset and pair."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Table, by_dataset_and_pair, grid_by_column, seed_note


def _column(row: dict) -> str:
    return f"{row['attack'].upper()} {row['eps_255']:g}/255"


@LAYOUTS.register("robustness")
def robustness(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Clean and robust top-1 accuracy (%) under each attack and eps of the adversarial evaluations."""
    tables = []
    for (dataset, pair), mine in by_dataset_and_pair(cells).items():
        rows = list(dict.fromkeys(c.row for c in mine))
        found: dict[str, dict[str, float]] = {}  # run id -> column -> robust accuracy
        settings = set()
        for cell in mine:
            for stored in results.evaluations(cell.run_id, "adversarial"):
                r = stored["results"]
                found.setdefault(cell.run_id, {})["clean"] = r["clean_acc"]
                found[cell.run_id].update({_column(row): row["robust_acc"] for row in r["results"]})
                settings.add((r["num_examples"], stored["settings"]["seed"]))
        columns = ["clean"] + sorted({k for v in found.values() for k in v if k != "clean"},
                                     key=lambda k: (k.split()[0], float(k.split()[1].split("/")[0])))
        values, missing = grid_by_column(mine, rows, columns, lambda c, column: found.get(c.run_id, {}).get(column))
        protocol = ", ".join(f"{n} test images, seed {seed}" for n, seed in sorted(settings))
        notes = seed_note("robust top-1 (%) on a fixed test subset: correct before and after the attack", missing)
        if protocol:
            notes.append(f"subset: {protocol}; PGD step eps/4, random start (see the stored settings)")
        tables.append(Table(title=f"{dataset} {pair}: adversarial robustness", rows=rows, columns=columns,
                            cells=values, metric="robust top-1", notes=notes).mark_best())
    return tables
