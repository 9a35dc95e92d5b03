"""Robust accuracy against eps, one line per method, one panel per attack (adversarial evaluations)."""
from __future__ import annotations

import statistics

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug


@PLOTS.register("robustness")
def robust_accuracy_vs_eps(cells, results) -> dict:
    """Robust top-1 against eps, one line per method, one panel per attack."""
    figures = {}
    for (dataset, column), mine in groups(cells).items():
        points: dict[str, dict[str, dict[float, list[float]]]] = {}  # attack -> row -> eps -> values
        for cell in {c.run_id: c for c in mine}.values():
            for stored in results.evaluations(cell.run_id, "adversarial"):
                clean = stored["results"]["clean_acc"]
                for r in stored["results"]["results"]:
                    by_eps = points.setdefault(r["attack"], {}).setdefault(cell.row, {})
                    by_eps.setdefault(0.0, []).append(clean)
                    by_eps.setdefault(r["eps_255"], []).append(r["robust_acc"])
        if not points:
            continue
        fig = Figure(figsize=(5 * len(points), 4), layout="constrained")
        axes = fig.subplots(1, len(points), squeeze=False)[0]
        for ax, (attack, by_row) in zip(axes, sorted(points.items())):
            for row in rows_of(mine):
                if row in by_row:
                    eps = sorted(by_row[row])
                    ax.plot(eps, [statistics.fmean(by_row[row][e]) for e in eps], marker="o", label=row)
            ax.set(title=attack.upper(), xlabel="eps (x 1/255)", ylabel="robust top-1 (%)")
            ax.legend()
        fig.suptitle(f"{dataset}: {column}")
        figures[slug("robustness", dataset, column)] = fig
    return figures
