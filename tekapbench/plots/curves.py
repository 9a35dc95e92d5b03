"""Training curves: train loss and test accuracy per epoch (from the records' history, or the history.jsonl
of a run not finished yet), mean over seeds."""
from __future__ import annotations

import statistics

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug


@PLOTS.register("curves")
def training_curves(cells, results) -> dict:
    """Train loss and test top-1 per epoch, one line per method (mean over seeds)."""
    figures = {}
    for (dataset, column), mine in groups(cells).items():
        fig = Figure(figsize=(10, 4), layout="constrained")
        loss_ax, acc_ax = fig.subplots(1, 2)
        drawn = False
        for row in rows_of(mine):
            found = [results.history(c.run_id) for c in {c.run_id: c for c in mine if c.row == row}.values()]
            histories = [h for h, _ in found if h]
            if not histories:
                continue
            # a run still training (or interrupted) is drawn as far as its history.jsonl goes, dashed
            running = any(not finished for h, finished in found)
            epochs = min(len(h) for h in histories)
            x = [histories[0][i]["epoch"] for i in range(epochs)]
            for ax, key in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
                ax.plot(x, [statistics.fmean(h[i][key] for h in histories) for i in range(epochs)],
                        label=f"{row} (unfinished)" if running else row, linestyle="--" if running else "-",
                        marker="o" if epochs < 10 else None)  # a line of one epoch is not drawn; a dot is
            drawn = True
        if drawn:
            loss_ax.set(xlabel="epoch", ylabel="train loss (weighted sum of terms)", yscale="log")
            acc_ax.set(xlabel="epoch", ylabel="test top-1 (%)")
            acc_ax.legend()
            fig.suptitle(f"{dataset}: {column}")
            figures[slug("curves", dataset, column)] = fig
    return figures
