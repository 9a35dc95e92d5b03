"""Per-class test accuracy against the class's number of training images (shot_groups evaluations)."""
from __future__ import annotations

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug


@PLOTS.register("long_tail")
def per_class_accuracy_vs_class_size(cells, results) -> dict:
    """Per-class test top-1 against the class's number of training images."""
    figures = {}
    for (dataset, column), mine in groups(cells).items():
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        labelled: set[str] = set()
        for row in rows_of(mine):
            for cell in {c.run_id: c for c in mine if c.row == row}.values():
                for stored in results.evaluations(cell.run_id, "shot_groups"):
                    r = stored["results"]
                    ax.scatter(r["train_counts"], r["per_class_accuracy"], s=12, alpha=0.6,
                               label=None if row in labelled else row)
                    labelled.add(row)
        if labelled:
            ax.set(xscale="log", xlabel="training images of the class", ylabel="test top-1 of the class (%)")
            ax.legend()
            fig.suptitle(f"{dataset}: {column}")
            figures[slug("long-tail", dataset, column)] = fig
    return figures
