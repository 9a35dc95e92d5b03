"""Reliability diagrams: per confidence bin, accuracy against mean confidence, one panel per method,
from the bins the calibration evaluation stores (records stored before it stored them are skipped)."""
from __future__ import annotations

from matplotlib.figure import Figure

from tekapbench.plots.base import PLOTS, groups, rows_of, slug
from tekapbench.tables.shared_settings import shared_evaluations

BINS = ("bin_confidence", "bin_accuracy", "bin_count")


def pooled_bins(stored: list[dict]) -> dict[str, list] | None:
    """The bins of several seeds' results pooled: counts summed, confidence and accuracy count-weighted."""
    stored = [r for r in stored if all(key in r for key in BINS)]
    counts = [sum(n) for n in zip(*(r["bin_count"] for r in stored))]
    if not any(counts):
        return None

    def weighted(key: str) -> list[float | None]:
        sums = [0.0] * len(counts)
        for r in stored:
            for i, (value, n) in enumerate(zip(r[key], r["bin_count"])):
                sums[i] += value * n if n else 0.0
        return [s / n if n else None for s, n in zip(sums, counts)]

    return {"bin_confidence": weighted("bin_confidence"), "bin_accuracy": weighted("bin_accuracy"), "bin_count": counts}


@PLOTS.register("reliability")
def reliability_diagrams(cells, results) -> dict:
    """Accuracy against mean confidence per bin, the diagonal for perfect calibration, one panel per method."""
    from tekapbench.evaluations.calibration import ece_from_bins  # here: importing evaluations loads torch

    figures = {}
    for (dataset, column), mine in groups(cells).items():
        stored = shared_evaluations(mine, results, "calibration")
        by_row = {row: bins for row in rows_of(mine)
                  if (bins := pooled_bins([stored.results[c.run_id] for c in mine
                                           if c.row == row and c.run_id in stored.results]))}
        if not by_row:
            continue
        fig = Figure(figsize=(3.2 * len(by_row), 4.2), layout="constrained")
        axes = fig.subplots(1, len(by_row), squeeze=False, sharey=True)[0]
        for ax, (row, bins) in zip(axes, by_row.items()):
            filled = [(c, a, n) for c, a, n in zip(*(bins[key] for key in BINS)) if n]
            confidence, accuracy, count = zip(*filled)
            ax.plot([0, 100], [0, 100], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
            ax.plot(confidence, accuracy, label="accuracy per bin")
            ax.scatter(confidence, accuracy, s=[4 + 300 * n / sum(count) for n in count], zorder=3)
            ax.set(title=f"{row}\nECE {ece_from_bins(bins):.2f}%", xlim=(-3, 103), ylim=(-3, 103),
                   xlabel="mean confidence (%)", aspect="equal")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(loc="upper left", fontsize="small")
        bins_used = len(next(iter(by_row.values()))["bin_count"])
        fig.suptitle(f"{dataset}: {column} · {bins_used} confidence bins, marker area ∝ share of test images")
        figures[slug("reliability", dataset, column)] = fig
    return figures
