"""The TeKAP paper's comparison with state-of-the-art methods (Hossain et al., ICLR 2025, "Comparison with SOTAs"): each
base method beside the same method with TeKAP, per teacher->student pair, with ✓ where TeKAP improves its
base. A row is paired with its base by the suite's explicit key (``baseline = "KD"`` on the method); in
plans without one, a row labelled exactly '<base>+TeKAP' (the default label of a method with [tekap]) is
the variant of '<base>'."""
from __future__ import annotations

from tekapbench.tables.base import (LAYOUTS, Cell, ResultsView, Stat, Table, grid, paired_difference, seed_note)


def variants_of(cells: list[Cell]) -> tuple[dict[str, list[str]], str]:
    """base row -> the rows compared with it, in suite order; and the rule that paired them."""
    rows = list(dict.fromkeys(c.row for c in cells))
    declared = {c.row: c.baseline for c in cells if c.baseline is not None}
    pairs: dict[str, list[str]] = {}
    if declared:
        for row in rows:
            if row in declared:
                pairs.setdefault(declared[row], []).append(row)
        return pairs, "rows paired by the suite's baseline key"
    for row in rows:
        if row.endswith("+TeKAP") and row.removesuffix("+TeKAP") in rows:
            pairs.setdefault(row.removesuffix("+TeKAP"), []).append(row)
    return pairs, "rows paired by label: '<base>+TeKAP' with '<base>' (set baseline = \"...\" on a method)"


@LAYOUTS.register("sota")
def sota(cells: list[Cell], results: ResultsView) -> list[Table]:
    """Base vs base+TeKAP top-1 (%) per pair with their paired Δ; ✓ where TeKAP improves its base;
    Teacher, Student and unpaired rows as references."""
    tables = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        mine = [c for c in cells if c.dataset == dataset]
        all_rows = list(dict.fromkeys(c.row for c in mine))
        pairs = list(dict.fromkeys(c.column for c in mine))
        values, missing = grid(mine, all_rows, pairs, lambda c: results.accuracy(c.run_id))
        variants, rule = variants_of(mine)
        paired = {v for vs in variants.values() for v in vs} | set(variants)
        # one table row per (base, variant); a base with several variants names the variant in the row
        compared = [(f"{base} / {variant}" if len(vs) > 1 else base, base, variant)
                    for base, vs in variants.items() for variant in vs]
        references = [(row, row, None) for row in all_rows if row not in paired]
        columns = [f"{pair} · {side}" for pair in pairs for side in ("base", "+TeKAP", "Δ")]
        cells_out: dict[tuple[str, str], Stat | None] = {}
        table = Table(title=f"{dataset}: comparison with state-of-the-art methods, top-1 (%)",
                      rows=[label for label, _, _ in references + compared], columns=columns, cells=cells_out,
                      metric=results.metric_label, mark_meaning="TeKAP improves its base method",
                      notes=seed_note(results.metric_label, missing) + [rule])
        for label, base, variant in references + compared:
            for pair in pairs:
                cells_out[label, f"{pair} · base"] = values[base, pair]
                cells_out[label, f"{pair} · +TeKAP"] = values[variant, pair] if variant else None
                cells_out[label, f"{pair} · Δ"] = (paired_difference(values[variant, pair], values[base, pair])
                                                    if variant else None)
                if variant:
                    table.differences[label, f"{pair} · Δ"] = f"{variant} vs {base}, {pair}"
                    table.improvements[label, f"{pair} · +TeKAP"] = (label, f"{pair} · Δ")
        pair_of = {c.column: c for c in mine}
        side_rows = {"base": {label: base for label, base, _ in compared},
                     "+TeKAP": {label: variant for label, _, variant in compared}}
        table.column_keys = {f"{pair} · {side}": {"dataset": dataset, "teacher": pair_of[pair].teacher,
                                                  "student": pair_of[pair].student, "metric": "top1",
                                                  "rows": side_rows[side]}
                             for pair in pairs for side in ("base", "+TeKAP")}
        tables.append(table)
    return tables
