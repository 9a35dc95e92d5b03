"""The seed's comparison with state-of-the-art methods: each base method beside the same method with
TeKAP, per teacher->student pair, with ✓ where TeKAP improves its base. A row counts as the TeKAP variant
of another when its label starts with that label and contains 'TeKAP' (e.g. 'DKD' and 'DKD+TeKAP')."""
from __future__ import annotations

from tekapbench.tables.base import LAYOUTS, Cell, ResultsView, Stat, Table, grid, seed_note


def tekap_variants(rows: list[str]) -> dict[str, str]:
    """base row -> its TeKAP row."""
    bases = [r for r in rows if "tekap" not in r.lower()]
    return {base: next(r for r in rows if r != base and r.startswith(base) and "tekap" in r.lower())
            for base in bases if any(r != base and r.startswith(base) and "tekap" in r.lower() for r in rows)}


@LAYOUTS.register("sota")
def sota(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Base vs base+TeKAP top-1 (%) per pair, ✓ where TeKAP improves; Teacher and Student as references."""
    tables = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        mine = [c for c in cells if c.dataset == dataset]
        all_rows = list(dict.fromkeys(c.row for c in mine))
        pairs = list(dict.fromkeys(c.column for c in mine))
        values, missing = grid(mine, all_rows, pairs, lambda c: results.accuracy(c.run_id))
        variants = tekap_variants(all_rows)
        references = [r for r in all_rows if r not in variants and r not in variants.values()]
        columns = [f"{pair} · {side}" for pair in pairs for side in ("base", "+TeKAP")]
        cells_out: dict[tuple[str, str], Stat | None] = {}
        marks = set()
        for row in references + list(variants):
            for pair in pairs:
                base = values[row, pair]
                tekap = values[variants[row], pair] if row in variants else None
                cells_out[row, f"{pair} · base"] = base
                cells_out[row, f"{pair} · +TeKAP"] = tekap
                if base and tekap and tekap.mean > base.mean:
                    marks.add((row, f"{pair} · +TeKAP"))
        pair_of = {c.column: c for c in mine}
        keys = {f"{pair} · {side}": {"dataset": dataset, "teacher": pair_of[pair].teacher,
                                     "student": pair_of[pair].student, "metric": "top1",
                                     "rows": variants if side == "+TeKAP" else {}}
                for pair in pairs for side in ("base", "+TeKAP")}
        tables.append(Table(title=f"{dataset}: comparison with state-of-the-art methods, top-1 (%)",
                            rows=references + list(variants), columns=columns, cells=cells_out,
                            metric=results.metric_label, marks=marks, column_keys=keys,
                            notes=seed_note(results.metric_label, missing) + ["✓: TeKAP improves its base method"]))
    return tables
