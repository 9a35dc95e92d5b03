"""Published numbers (results/paper/published.csv) beside reproduced ones: ``table --compare paper``."""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from tekapbench.errors import UsageError
from tekapbench.tables.base import Stat, Table

PUBLISHED = "published.csv"
Key = tuple[str, str, str, str, str]  # dataset, teacher, student, row, metric


def load_published(folder: Path) -> dict[Key, tuple[float, str]]:
    path = Path(folder) / PUBLISHED
    try:
        with open(path, newline="") as fh:
            lines = list(csv.DictReader(fh))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the published numbers ({exc.strerror}); it ships with the "
                         f"repository under results/paper/") from None
    published: dict[Key, tuple[float, str]] = {}
    for line in lines:
        key = (line["dataset"], line["teacher"], line["student"], line["row"], line["metric"])
        published.setdefault(key, (float(line["value"]), line["source"]))  # the first source listed wins
    return published


def with_published(table: Table, published: dict[Key, tuple[float, str]]) -> Table:
    """The table with a 'paper' and a 'Δ' (reproduced - published) column after each of its columns."""
    if not table.column_keys:
        return replace(table, notes=[*table.notes, "no published numbers are matched for this layout"])
    columns, cells, sources = [], dict(table.cells), set()
    for column in table.columns:
        key = table.column_keys.get(column)
        if key is None:
            columns.append(column)
            continue
        columns += [column, f"{column} · paper", f"{column} · Δ"]
        for row in table.rows:
            label = key.get("rows", {}).get(row, row)  # e.g. the +TeKAP column of the sota layout
            found = (published.get((key["dataset"], key["teacher"], key["student"], label, key["metric"]))
                     # a source that does not state the pair (e.g. the TeKAP paper's transfer table)
                     or published.get((key["dataset"], "", "", label, key["metric"])))
            ours = table.cells[row, column]
            cells[row, f"{column} · paper"] = Stat(found[0], None, 1) if found else None
            cells[row, f"{column} · Δ"] = Stat(ours.mean - found[0], None, ours.n) if found and ours else None
            if found:
                sources.add(found[1])
    notes = [*table.notes, "Δ = reproduced - published", *[f"paper: {s}" for s in sorted(sources)]]
    return replace(table, columns=columns, cells=cells, notes=notes)
