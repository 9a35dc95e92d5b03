"""What a table is, independent of how it is rendered."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

from tekapbench.registry import Registry


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (std is None for a single seed)."""

    mean: float
    std: float | None
    n: int

    @staticmethod
    def of(values: Iterable[float]) -> "Stat | None":
        vals = [v for v in values if v is not None and not math.isnan(v)]
        if not vals:
            return None
        return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


@dataclass
class Table:
    title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Stat | None]
    metric: str = ""
    notes: list[str] = field(default_factory=list)
    best: set[tuple[str, str]] = field(default_factory=set)  # cells shown in bold
    marks: set[tuple[str, str]] = field(default_factory=set)  # cells marked ✓ (e.g. TeKAP improves its base)
    # column -> {dataset, teacher, student, metric}: what a column measured, to match published numbers
    column_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def show_n(self) -> bool:
        """Whether cells rest on different numbers of seeds (then each shows its n)."""
        return len({s.n for s in self.cells.values() if s is not None}) > 1

    def mark_best(self, higher_is_better: bool = True, exclude: tuple[str, ...] = ("Teacher",)) -> "Table":
        """Bold the best mean of each column among the rows not excluded (ties all bold)."""
        for column in self.columns:
            stats = {row: self.cells[row, column] for row in self.rows if row not in exclude}
            means = [s.mean for s in stats.values() if s is not None]
            if len(means) > 1:
                top = max(means) if higher_is_better else min(means)
                self.best |= {(row, column) for row, s in stats.items() if s is not None and s.mean == top}
        return self


@dataclass(frozen=True)
class Cell:
    """One (dataset, teacher->student column, row, seed) of a suite's tables and the run that fills it."""

    dataset: str
    teacher: str
    student: str
    row: str
    seed: int
    run_id: str

    @property
    def column(self) -> str:
        return f"{self.teacher} → {self.student}"


def with_delta(table: Table, base_row: str) -> Table:
    """The table with a 'Δ vs <base_row>' column after each column: each row's mean minus the base row's."""
    if base_row not in table.rows:
        from tekapbench.errors import UsageError

        raise UsageError(f"--delta {base_row!r}: no such row in {table.title!r}; rows: {', '.join(table.rows)}")
    columns, cells = [], dict(table.cells)
    for column in table.columns:
        delta = f"{column} · Δ vs {base_row}"
        columns += [column, delta]
        base = table.cells[base_row, column]
        for row in table.rows:
            ours = table.cells[row, column]
            cells[row, delta] = Stat(ours.mean - base.mean, None, ours.n) if ours and base and row != base_row else None
    return replace(table, columns=columns, cells=cells)


class ResultsView(Protocol):
    """What a layout reads: the chosen test accuracy of a run, and its stored evaluations."""

    metric_label: str

    def record(self, run_id: str) -> dict | None: ...

    def accuracy(self, run_id: str) -> float | None: ...

    def evaluations(self, run_id: str, name: str) -> list[dict]: ...


def grid(cells: list[Cell], rows: list[str], columns: list[str],
         value: Callable[[Cell], "float | None"], column_of: Callable[[Cell], str] = lambda c: c.column
         ) -> tuple[dict[tuple[str, str], Stat | None], int]:
    """Mean ± std per (row, column) over seeds, one value per run (a teacher shared by seeds counts once);
    also how many runs have no value yet."""
    out: dict[tuple[str, str], Stat | None] = {}
    missing = 0
    for row in rows:
        for column in columns:
            runs = {c.run_id: c for c in cells if c.row == row and column_of(c) == column}
            values = [value(c) for c in runs.values()]
            missing += sum(v is None for v in values)
            out[row, column] = Stat.of(v for v in values if v is not None)
    return out, missing


def grid_by_column(cells: list[Cell], rows: list[str], columns: list[str],
                   value: Callable[[Cell, str], "float | None"]) -> tuple[dict[tuple[str, str], Stat | None], int]:
    """Like ``grid`` for tables whose columns are measurements of every cell (not teacher->student pairs)."""
    values: dict[tuple[str, str], Stat | None] = {}
    missing = 0
    for column in columns:
        part, gone = grid(cells, rows, [column], lambda c: value(c, column), column_of=lambda c: column)
        values.update(part)
        missing = max(missing, gone)
    return values, missing


def by_dataset_and_pair(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.dataset, cell.column), []).append(cell)
    return groups


def seed_note(metric: str, missing: int) -> list[str]:
    notes = [f"{metric}; mean ± sample std over seeds"]
    if missing:
        notes.append(f"{missing} value(s) not available yet (run not finished or not evaluated)")
    return notes


Layout = Callable[[list[Cell], ResultsView], list[Table]]
LAYOUTS: Registry[Layout] = Registry("table layout")
