"""Robust accuracy against eps, one line per method, one panel per attack (adversarial evaluations).

One figure per test subset (size, selection, seed), as in the robustness table: points measured on
different subsets are never drawn on one line or averaged together.
"""
from __future__ import annotations

import statistics

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug
from tekapbench.tables.layouts.robustness import SubsetResults, by_subset


def _points(found: SubsetResults, row_of: dict[str, str]) -> dict[str, dict[str, dict[float, list[float]]]]:
    """panel (attack, numbered when it ran with several settings) -> row -> eps -> values (clean at eps 0)."""
    points: dict[str, dict[str, dict[float, list[float]]]] = {}
    for run_id, by_key in found.robust.items():
        panels = set()
        for (attack, index, eps), value in by_key.items():
            panel = found.label(attack, index)
            points.setdefault(panel, {}).setdefault(row_of[run_id], {}).setdefault(eps, []).append(value)
            panels.add(panel)
        for panel in panels:  # each run's clean accuracy once per panel it appears in
            points[panel][row_of[run_id]].setdefault(0.0, []).append(found.clean[run_id])
    return points


@PLOTS.register("robustness")
def robust_accuracy_vs_eps(cells, results) -> dict:
    """Robust top-1 against eps, one line per method, one panel per attack, one figure per test subset."""
    figures = {}
    for (dataset, column), mine in groups(cells).items():
        row_of = {c.run_id: c.row for c in mine}
        subsets = by_subset(list(row_of), results)
        for subset, found in subsets.items():
            points = _points(found, row_of)
            if not points:
                continue
            fig = Figure(figsize=(5 * len(points), 4), layout="constrained")
            axes = fig.subplots(1, len(points), squeeze=False)[0]
            for ax, (panel, by_row) in zip(axes, sorted(points.items())):
                for row in rows_of(mine):
                    if row in by_row:
                        eps = sorted(by_row[row])
                        ax.plot(eps, [statistics.fmean(by_row[row][e]) for e in eps], marker="o", label=row)
                ax.set(title=panel, xlabel="eps (x 1/255)", ylabel="robust top-1 (%)")
                ax.legend()
            fig.suptitle(f"{dataset}: {column}\n{subset.label()}")
            name = ("robustness", dataset, column) + ((subset.label(),) if len(subsets) > 1 else ())
            figures[slug(*name)] = fig
    return figures
