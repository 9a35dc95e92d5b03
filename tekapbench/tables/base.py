"""What a table is, independent of how it is rendered."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol

from tekapbench.registry import Registry


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (std is None for a single seed).

    ``by_seed`` keeps each seed's value, so that two rows can be compared seed by seed (students of one
    seed share their initialisation and data order); ``interval`` is the 95 % confidence interval of a
    paired difference (see ``paired_difference``)."""

    mean: float
    std: float | None
    n: int
    by_seed: tuple[tuple[int, float], ...] = field(default=(), compare=False)
    interval: tuple[float, float] | None = None

    @staticmethod
    def of(values: Iterable[float], by_seed: dict[int, float | None] | None = None) -> "Stat | None":
        vals = [v for v in values if _present(v)]
        if not vals:
            return None
        return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals),
                    by_seed=tuple((s, v) for s, v in (by_seed or {}).items() if _present(v)))


def _present(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


CONFIDENCE = 0.95


def _t_quantile(df: int) -> float:
    from scipy.stats import t  # imported here: only tables with paired differences need it

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def paired_difference(ours: Stat | None, base: Stat | None) -> Stat | None:
    """Mean of ``ours - base`` over the seeds both have, with a 95 % confidence interval from the
    t-distribution with n - 1 degrees of freedom (none for a single seed)."""
    if ours is None or base is None:
        return None
    base_by_seed = dict(base.by_seed)
    diffs = [(seed, value - base_by_seed[seed]) for seed, value in ours.by_seed if seed in base_by_seed]
    if not diffs:
        return None
    values = [d for _, d in diffs]
    mean, n = statistics.fmean(values), len(values)
    if n < 2:
        return Stat(mean, None, n, by_seed=tuple(diffs))
    std = statistics.stdev(values)
    half = _t_quantile(n - 1) * std / math.sqrt(n)
    return Stat(mean, std, n, by_seed=tuple(diffs), interval=(mean - half, mean + half))


def seeds_needed(difference: Stat, limit: int = 10_000) -> int | None:
    """How many seeds the 95 % interval of a paired difference would need to exclude zero, if the mean and
    spread stayed as observed: the least n with t(n-1) * std / sqrt(n) < |mean|. None when the mean is
    zero (no number of seeds resolves it) or the answer is above ``limit``."""
    if difference.std is None or difference.mean == 0:
        return None
    if difference.std == 0:
        return 2
    n = 2
    while _t_quantile(n - 1) * difference.std / math.sqrt(n) >= abs(difference.mean):
        n = max(n + 1, int(n * 1.1))
        if n > limit:
            return None
    while n > 2 and _t_quantile(n - 2) * difference.std / math.sqrt(n - 1) < abs(difference.mean):
        n -= 1  # the geometric steps may have overshot
    return n


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
    # cells holding a paired difference -> what is compared, e.g. "KD+TeKAP vs KD, t → s" (for the notes)
    differences: dict[tuple[str, str], str] = field(default_factory=dict)
    # a cell that earns a mark (✓) -> the paired-difference cell that decides it (see ``settle_marks``)
    improvements: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    mark_meaning: str = "improves on its base"

    @property
    def show_n(self) -> bool:
        """Whether cells rest on different numbers of seeds (then each shows its n)."""
        return len({s.n for s in self.cells.values() if s is not None}) > 1

    def mark_best(self, higher_is_better: bool = True, exclude: tuple[str, ...] = ("Teacher",),
                  lower_is_better: Iterable[str] = ()) -> "Table":
        """Bold the best mean of each column among the rows not excluded (ties all bold); the columns in
        ``lower_is_better`` (errors, losses beside accuracies) rank the lowest first whatever the default."""
        lower = set(lower_is_better)
        for column in self.columns:
            stats = {row: self.cells[row, column] for row in self.rows if row not in exclude}
            means = [s.mean for s in stats.values() if s is not None]
            if len(means) > 1:
                top = max(means) if higher_is_better and column not in lower else min(means)
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
    baseline: str | None = None  # the row this row is compared with (``baseline`` of a method in the suite)

    @property
    def column(self) -> str:
        return f"{self.teacher} → {self.student}"


def with_delta(table: Table, base_row: str) -> Table:
    """The table with a 'Δ vs <base_row>' column after each column: each row's paired difference to the
    base row, seed by seed (see ``paired_difference``)."""
    if base_row not in table.rows:
        from tekapbench.errors import UsageError

        raise UsageError(f"--delta {base_row!r}: no such row in {table.title!r}; rows: {', '.join(table.rows)}")
    columns, cells, differences = [], dict(table.cells), dict(table.differences)
    for column in table.columns:
        delta = f"{column} · Δ vs {base_row}"
        columns += [column, delta]
        base = table.cells[base_row, column]
        for row in table.rows:
            cells[row, delta] = None if row == base_row else paired_difference(table.cells[row, column], base)
            if row != base_row:
                differences[row, delta] = f"{row} vs {base_row}, {column}"
    return replace(table, columns=columns, cells=cells, differences=differences)


def settle_marks(table: Table, ci: bool = True) -> Table:
    """Marks and notes of the paired differences. With ``ci``, a cell is marked only when the 95 %
    interval of its difference lies above zero, and the notes say, for each difference the interval does
    not resolve, how many seeds would; without, a cell is marked when the mean difference is positive and
    differences are shown as mean ± std over seeds."""
    if not table.differences:
        return table
    cells = dict(table.cells)
    marks = set(table.marks)
    for cell, deciding in table.improvements.items():
        difference = cells.get(deciding)
        resolved = difference is not None and (
            (difference.interval is not None and difference.interval[0] > 0) if ci else difference.mean > 0)
        if resolved:
            marks.add(cell)
    notes = list(table.notes)
    if ci:
        notes.append(f"Δ: paired difference over seeds (each seed's row minus the same seed's baseline), mean "
                     f"[{CONFIDENCE:.0%} confidence interval, t-distribution with n-1 degrees of freedom]")
        if table.improvements:
            notes.append(f"✓: {table.mark_meaning}, with the {CONFIDENCE:.0%} interval of the paired Δ above 0 "
                         "(one seed gives no interval and no mark)")
        for key, what in table.differences.items():
            difference = cells.get(key)
            if difference is None or (difference.interval is not None and
                                      (difference.interval[0] > 0 or difference.interval[1] < 0)):
                continue
            if difference.std is None:
                notes.append(f"{what}: Δ {difference.mean:+.2f} from one seed: no interval; run more seeds")
                continue
            needed = seeds_needed(difference)
            estimate = (f"about {needed} seeds would resolve it at this spread" if needed is not None
                        else "no number of seeds resolves a mean of exactly 0" if difference.mean == 0
                        else "more than 10,000 seeds would be needed at this spread")
            notes.append(f"{what}: Δ {difference.mean:+.2f}, std {difference.std:.2f} over {difference.n} seeds, "
                         f"interval includes 0; {estimate}")
    else:
        cells.update({key: replace(cells[key], interval=None) for key in table.differences if cells.get(key)})
        notes.append("Δ: paired difference over seeds (each seed's row minus the same seed's baseline), "
                     "mean ± sample std; no confidence intervals (--no-ci)")
        if table.improvements:
            notes.append(f"✓: {table.mark_meaning} on the mean (--no-ci: not tested against the spread over seeds)")
    return replace(table, cells=cells, marks=marks, notes=notes)


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
            mine = [c for c in cells if c.row == row and column_of(c) == column]
            by_run = {c.run_id: value(c) for c in {c.run_id: c for c in mine}.values()}
            missing += sum(v is None for v in by_run.values())
            # a run counts once in the mean, but is every seed's value when it serves several (a shared teacher)
            out[row, column] = Stat.of(by_run.values(), by_seed={c.seed: by_run[c.run_id] for c in mine})
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
