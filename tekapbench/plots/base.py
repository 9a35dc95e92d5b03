"""What a plot is: a registered function from a suite's cells and stored results to named figures."""
from __future__ import annotations

from typing import Callable

from matplotlib.figure import Figure

from tekapbench.registry import Registry
from tekapbench.tables.base import Cell

Plot = Callable[[list[Cell], "StoredResults"], dict[str, Figure]]  # noqa: F821 - tables.build.StoredResults
PLOTS: Registry[Plot] = Registry("plot")


def rows_of(cells: list[Cell]) -> list[str]:
    return list(dict.fromkeys(c.row for c in cells))


def groups(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        out.setdefault((cell.dataset, cell.column), []).append(cell)
    return out


def slug(*parts: str) -> str:
    """A file name from labels: 'curves', 'digits', 'resnet20_tiny → resnet8_tiny' -> curves_digits_resnet20_tiny-to-resnet8_tiny."""
    def clean(part: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in part.replace(" → ", "-to-")).strip("-")

    return "_".join(map(clean, parts))
