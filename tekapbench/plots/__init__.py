"""Plots of a suite's results (matplotlib, written as PNG and PDF): one file each, registered in PLOTS."""
import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or used

from tekapbench.plots.base import PLOTS  # noqa: E402
from tekapbench.registry import import_submodules  # noqa: E402

import_submodules(__name__)

__all__ = ["PLOTS"]
