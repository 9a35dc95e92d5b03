"""Accuracy against corruption severity (0 = clean, then the mean over corruptions at each stored
severity), one line per method, mean over seeds (corruptions evaluations)."""
from __future__ import annotations

import statistics

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug
from tekapbench.tables.layouts.corruptions import severities, severity_accuracy, source_note
from tekapbench.tables.shared_settings import shared_evaluations


def by_severity(stored: dict) -> dict[int, float]:
    """severity -> top-1 (%) of one stored result; 0 is the clean test set."""
    points = {s: severity_accuracy(stored, s) for s in severities(stored)}
    if stored.get("clean_accuracy") is not None:
        points[0] = stored["clean_accuracy"]
    return {s: v for s, v in sorted(points.items()) if v is not None}


@PLOTS.register("corruptions")
def accuracy_vs_severity(cells, results) -> dict:
    """Top-1 against corruption severity, one line per method (mean over seeds)."""
    figures = {}
    for (dataset, column), mine in groups(cells).items():
        stored = shared_evaluations(mine, results, "corruptions")
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        drawn = False
        for row in rows_of(mine):
            points: dict[int, list[float]] = {}
            for run_id in dict.fromkeys(c.run_id for c in mine if c.row == row and c.run_id in stored.results):
                for severity, value in by_severity(stored.results[run_id]).items():
                    points.setdefault(severity, []).append(value)
            if points:
                x = sorted(points)
                ax.plot(x, [statistics.fmean(points[s]) for s in x], marker="o", label=row)
                drawn = True
        if drawn:
            ax.set(xlabel="corruption severity (0 = clean)", ylabel="top-1 (%), mean over corruptions")
            ax.set_xticks(range(0, 6))
            ax.legend()
            ax.set_title("; ".join(source_note(stored)), fontsize="small", wrap=True)
            fig.suptitle(f"{dataset}: {column}")
            figures[slug("corruptions", dataset, column)] = fig
    return figures
