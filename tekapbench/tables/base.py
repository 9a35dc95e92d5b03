"""What a table is, independent of how it is rendered."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable

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


MetricLookup = Callable[[str], "float | None"]  # run id -> value (None: no finished record)
Layout = Callable[[list[Cell], MetricLookup, str], list[Table]]
LAYOUTS: Registry[Layout] = Registry("table layout")
